"""The stack description (stored on a Target) and its rendering to a standard docker-compose.yml.

A stack is described once:

    {"network_mode": "bridge" | "host",
     "services": {name: {"role": "app" | "stateful", "image": (stateful only), "port": 8080,
                         "health_path": "/healthz", "replicas": 1, "command": [...],
                         "environment": {...}, "secrets": {"ENV_VAR": "SECRET_NAME"},
                         "volumes": ["data:/path"], "healthcheck": {compose healthcheck},
                         "restart": "unless-stopped", "init": true, "depends_on": [...]}},
     "edge": {"routes": {"/api/": "backend", "/": "frontend"}},
     "volumes": [...], "networks": [...]}

"app" services take their image from the release and are replaced blue-green or rolling behind the
release proxy (``engines/release_proxy.py``; ``edge.routes`` are its routes, the key kept from before
it had that name); "stateful" services keep the image named here and are reconciled (recreated only
when their configuration changes). Secrets are references: the rendered file says ``${SECRET_NAME}``, and a
deploy takes the value from the environment's secret store (or a prefixed worker variable) at apply
time, never from the control plane's own settings (``deployments/secrets.py``), and never shows it.
"""

import copy
import re
from dataclasses import dataclass
from typing import Any

import yaml
from django.conf import settings

from deployments.errors import DeploymentValidationError
from deployments.stack_model import Stack, route_path_problem
from tenants.domains import nginx_conf

# Listen addresses, upstream servers and the colour label go into nginx.conf as single words.
_NGINX_WORD = re.compile(r"^[A-Za-z0-9._:\[\]+-]{1,200}$")


def default_stack() -> dict[str, Any]:
    """The seed's production stack: Go API, Next.js front end, PostgreSQL, Redis behind nginx."""
    return {
        "network_mode": "bridge",
        "services": {
            "backend": {
                "role": "app",
                "port": 8080,
                "health_path": "/healthz",
                "replicas": 2,
                "restart": "unless-stopped",
                "environment": {"REDIS_URL": "redis://redis:6379"},
                "secrets": {"DATABASE_URL": "APP_DATABASE_URL"},
                "volumes": ["uploads:/app/uploads"],
                "depends_on": ["postgres", "redis"],
                "healthcheck": {
                    "test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:$${PORT}/healthz"],
                    "interval": "10s",
                    "timeout": "3s",
                    "retries": 3,
                    "start_period": "10s",
                },
            },
            "frontend": {
                "role": "app",
                "port": 3000,
                "health_path": "/",
                "replicas": 2,
                "restart": "unless-stopped",
                "environment": {"API_URL": "https://api.example.com"},
                "healthcheck": {
                    "test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:$${PORT}/"],
                    "interval": "10s",
                    "timeout": "3s",
                    "retries": 3,
                    "start_period": "10s",
                },
            },
            "postgres": {
                "role": "stateful",
                "image": "postgres:15-alpine",
                "restart": "unless-stopped",
                "environment": {"POSTGRES_DB": "ecommerce", "POSTGRES_USER": "ecommerce_user"},
                "secrets": {"POSTGRES_PASSWORD": "DB_PASSWORD"},
                "volumes": ["postgres_data:/var/lib/postgresql/data"],
                "healthcheck": {
                    "test": ["CMD-SHELL", "pg_isready -U ecommerce_user"],
                    "interval": "10s",
                    "timeout": "3s",
                    "retries": 5,
                },
            },
            "redis": {
                "role": "stateful",
                "image": "redis:7-alpine",
                "restart": "unless-stopped",
                "volumes": ["redis_data:/data"],
            },
        },
        "edge": {"routes": {"/api/": "backend", "/": "frontend"}},
        "volumes": ["postgres_data", "redis_data", "uploads"],
        "networks": [],
    }


def stack_problems(stack: Any) -> list[str]:
    """Everything wrong with a stack description, each naming what to fix (see ``stack_model``)."""
    return Stack.problems_of(stack)


def app_services(stack: dict) -> list[str]:
    return [name for name, svc in stack["services"].items() if svc.get("role") == "app"]


def stateful_services(stack: dict) -> list[str]:
    return [name for name, svc in stack["services"].items() if svc.get("role") == "stateful"]


def _compose_service(name: str, svc: dict, image: str, stack: dict) -> dict:
    out: dict[str, Any] = {"image": image}
    if svc.get("command"):
        out["command"] = svc["command"]
    if svc.get("restart"):
        out["restart"] = svc["restart"]
    if svc.get("init"):
        out["init"] = True
    env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
    if svc.get("role") == "app":
        env["PORT"] = str(svc["port"])
    # Secrets by reference: compose reads them from the shell or .env at `up` time.
    env.update({k: f"${{{ref}}}" for k, ref in (svc.get("secrets") or {}).items()})
    if env:
        out["environment"] = env
    if svc.get("volumes"):
        out["volumes"] = list(svc["volumes"])
    if svc.get("depends_on"):
        out["depends_on"] = list(svc["depends_on"])
    if svc.get("healthcheck"):
        out["healthcheck"] = copy.deepcopy(svc["healthcheck"])
    if svc.get("role") == "app" and svc.get("replicas", 1) > 1:
        out["deploy"] = {"replicas": svc["replicas"]}
    if stack.get("network_mode") == "host":
        out["network_mode"] = "host"
    elif stack.get("networks"):
        out["networks"] = list(stack["networks"])
    return out


def render_compose(
    *, stack: dict, images: dict[str, str], edge_image: str, edge_listen: str, project: str
) -> str:
    """A standard docker-compose.yml for the stack with the given app images."""
    services = {}
    for name, svc in stack["services"].items():
        image = (
            svc["image"]
            if svc.get("role") == "stateful"
            else images.get(name, f"${{{name.upper().replace('-', '_')}_IMAGE}}")
        )
        services[name] = _compose_service(name, svc, image, stack)
    host, _, port = edge_listen.rpartition(":")
    # The release proxy; "edge" in the file, as before, so existing compose projects keep their names.
    edge: dict[str, Any] = {
        "image": edge_image,
        "command": ["nginx", "-c", "/etc/nginx/nginx.conf", "-g", "daemon off;"],
        "restart": "unless-stopped",
        "volumes": ["./nginx.conf:/etc/nginx/nginx.conf:ro"],
        "depends_on": app_services(stack),
    }
    if stack.get("network_mode") == "host":
        edge["network_mode"] = "host"
    else:
        edge["ports"] = [f"{host}:{port}:{port}" if host and host != "0.0.0.0" else f"{port}:{port}"]
        if stack.get("networks"):
            edge["networks"] = list(stack["networks"])
    services["edge"] = edge
    # version 3.8 keeps the file readable by docker-compose v1 as well as Compose v2.
    doc: dict[str, Any] = {"version": "3.8", "services": services}
    if stack.get("volumes"):
        doc["volumes"] = {v: {} for v in stack["volumes"]}
    if stack.get("networks") and stack.get("network_mode") != "host":
        doc["networks"] = {n: {} for n in stack["networks"]}
    header = (
        f"# Compose project: {project}. Secrets are ${{NAME}} references; set them in the shell or .env.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


ACME_UPSTREAM = "_acme"  # not a service name (those start with a letter)


@dataclass(frozen=True)
class EdgeTls:
    """The public side of a target's edge: listeners and the certificate generation it serves."""

    http_listen: str
    https_listen: str
    certs: str  # folder holding <domain>.pem/.key and _platform.pem/.key
    domains: list[str]
    platform: bool  # whether the *.<base> wildcard is in ``certs``
    acme_upstream: str  # the control plane (host:port) that answers HTTP-01 challenges


def edge_public(stack: dict) -> tuple[str, str]:
    """The stack's public (http, https) listeners for the TLS edge, ("", "") when it has none."""
    edge = stack.get("edge") or {}
    return str(edge.get("http") or ""), str(edge.get("https") or "")


def shop_front(stack: dict) -> str:
    """The app service shops' hosts are proxied to: ``edge.shop_front``, else the one routed at /."""
    edge = stack.get("edge") or {}
    return str(edge.get("shop_front") or (edge.get("routes") or {}).get("/") or "")


def render_proxy_config(
    *, stack: dict, listen: str, upstreams: dict[str, list[str]], label: str, tls: EdgeTls | None = None
) -> str:
    """nginx.conf for a compose target's edge (``engines/release_proxy.py``): one upstream per app
    service, the stack's routes and a health path on ``listen``; with ``tls``, also HTTPS for the
    platform's subdomains and every active custom domain, proxied to the shop front.

    ``label`` is sent back as X-Platform-Color, so the deployer can tell when a reload took effect.
    """
    # Checked here as well as in stack_problems: nothing unchecked is ever written into nginx.
    unsafe = [p for p in map(route_path_problem, stack["edge"]["routes"]) if p]
    words = [listen, label, *(addr for servers in upstreams.values() for addr in servers)]
    unsafe += [
        f"{word[:80]!r} cannot be written into the release proxy's nginx.conf; use host:port "
        "(letters, digits, '.', '-', ':', '[]', '+')."
        for word in words
        if not _NGINX_WORD.fullmatch(str(word))
    ]
    if unsafe:
        raise DeploymentValidationError(" ".join(unsafe))
    servers = {service: list(addrs) for service, addrs in upstreams.items()}
    public: dict[str, Any] = {}
    if tls is not None:
        front = shop_front(stack)
        if tls.acme_upstream:
            servers[ACME_UPSTREAM] = [tls.acme_upstream]
        public = dict(
            control_plane=ACME_UPSTREAM if tls.acme_upstream else "",
            shop_front=front if servers.get(front) else "",
            http_listen=tls.http_listen,
            https_listen=tls.https_listen,
            https_port=int(tls.https_listen.rpartition(":")[2]),
            base_domain=settings.PLATFORM_BASE_DOMAIN,
            platform_cert=(
                (f"{tls.certs}/_platform.pem", f"{tls.certs}/_platform.key") if tls.platform else None
            ),
            custom_domains=tls.domains,
            shared_tls=True,
        )
    spec = nginx_conf.EdgeSpec(
        prefix="/tmp", temp="/tmp", error_log="stderr", certs=tls.certs if tls else "/tmp",
        upstreams=servers,
        release=nginx_conf.ReleaseListener(
            listen=listen, label=label, routes=list(stack["edge"]["routes"].items())
        ),
        comment="Written by the platform deployer; do not edit on the host.",
        **public,
    )
    try:
        return nginx_conf.render(spec)
    except nginx_conf.UnsafeEdgeValue as exc:
        raise DeploymentValidationError(str(exc)) from None


def render_compose_proxy_config(*, stack: dict, edge_listen: str) -> str:
    """The nginx.conf the rendered docker-compose.yml mounts: upstreams by service name (Compose DNS)."""
    host_mode = stack.get("network_mode") == "host"
    listen = edge_listen if host_mode else edge_listen.rpartition(":")[2]
    upstreams = {
        name: [f"{'127.0.0.1' if host_mode else name}:{stack['services'][name]['port']}"]
        for name in app_services(stack)
    }
    return render_proxy_config(stack=stack, listen=listen, upstreams=upstreams, label="compose")
