"""The release proxy: the nginx container in front of a compose target's app services.

Not to be confused with the custom-domain edge (``tenants/domains/edge.py``), which terminates TLS
for tenants' own domains. The release proxy belongs to one compose project and is what blue-green
and rolling deployments switch: its upstreams are the app containers of the colour(s) serving now.

On the host it is the container ``<project>-edge`` labelled ``platform.role=edge`` (names kept from
before it had its own module, so existing deployments keep working); the step that switches it is
still called "switch edge" in the step log.
"""

import time
from dataclasses import dataclass

from docker.models.containers import Container

from deployments.engines.docker_host import DockerHost
from deployments.errors import StepFailed
from deployments.stack import app_services, render_proxy_config

CONFIG = "/etc/nginx/nginx.conf"
# Host names and labels of the proxy container; existing hosts have them, so they stay.
CONTAINER_SUFFIX = "-edge"
ROLE = "edge"
HEALTH_PATH = "/__edge/health"  # answered by the proxy itself (see render_proxy_config)
COLOR_HEADER = "X-Platform-Color"


@dataclass(frozen=True)
class Upstream:
    """One app container the proxy sends traffic to."""

    service: str
    address: str
    color: str


def colors_label(upstreams: list[Upstream]) -> str:
    return "+".join(sorted({u.color for u in upstreams})) or "none"


class ReleaseProxy:
    # nginx's worker processes and whether each still accepts connections ("worker process" in its
    # title) or is finishing its last requests ("worker process is shutting down").
    _WORKERS = (
        'for d in /proc/[0-9]*; do t=$(cat "$d/cmdline" 2>/dev/null); '
        'case "$t" in "nginx: worker process"*) echo "${d#/proc/} $t";; esac; done'
    )

    def __init__(self, host: DockerHost, *, stack: dict, listen: str, image: str) -> None:
        self.host = host
        self.stack = stack
        self.listen = listen  # host:port, the target's edge_listen
        self.image = image
        self.name = f"{host.project}{CONTAINER_SUFFIX}"

    def container(self) -> Container | None:
        return self.host.container(self.name)

    def exists(self) -> bool:
        return bool(self.host.containers(role=ROLE))

    def exec(self, cmd: list[str]) -> tuple[int, str]:
        """Run ``cmd`` inside the proxy container (app health probes run from here too)."""
        proxy = self.container()
        if proxy is None:
            raise StepFailed("The edge container is gone; deploy again to recreate it.")
        return self.host.exec(proxy, cmd)

    def config(self, upstreams: list[Upstream]) -> str:
        # In its own network namespace the proxy listens on every address; docker publishes the port.
        listen = self.listen if self.host.host_mode else self.listen.rpartition(":")[2]
        by_service = {
            service: [u.address for u in upstreams if u.service == service]
            for service in app_services(self.stack)
        }
        return render_proxy_config(
            stack=self.stack, listen=listen, upstreams=by_service, label=colors_label(upstreams)
        )

    def _local(self) -> str:
        """The proxy's address as seen from inside its container."""
        host, _, port = self.listen.rpartition(":")
        return f"{'127.0.0.1' if host in ('', '0.0.0.0') or not self.host.host_mode else host}:{port}"

    def ensure(self, upstreams: list[Upstream]) -> None:
        """Start the proxy (serving ``upstreams``) unless it runs; a stopped one is replaced."""
        proxy = self.container()
        if proxy is not None and proxy.status == "running":
            return
        if proxy is not None:
            proxy.remove(force=True)
        self.host.ensure_image(self.image)
        extra = {}
        if not self.host.host_mode:
            host, _, port = self.listen.rpartition(":")
            extra["ports"] = {f"{port}/tcp": (host or "0.0.0.0", int(port))}
        proxy = self.host.create(
            name=self.name,
            image=self.image,
            labels={"platform.role": ROLE},
            alias=ROLE,
            command=["nginx", "-c", CONFIG, "-g", "daemon off;"],
            restart_policy={"Name": "unless-stopped"},
            **extra,
        )
        self.host.put_file(proxy, "/etc/nginx", "nginx.conf", self.config(upstreams))
        proxy.start()
        deadline = time.monotonic() + 15
        while self.exec(["timeout", "5", "wget", "-q", "-O", "/dev/null", f"http://{self._local()}{HEALTH_PATH}"])[0]:
            if time.monotonic() > deadline:
                raise StepFailed(f"The edge did not start; its log:\n{self.host.logs_tail(proxy)}")
            time.sleep(0.1)
        self.host.log(f"edge {self.name}: started on {self.listen}")

    def accepting_workers(self) -> set[str]:
        code, out = self.exec(["sh", "-c", self._WORKERS])
        if code:
            raise StepFailed(f"Could not list the edge's nginx workers: {out.strip()}")
        rows = (line.partition(" ") for line in out.splitlines())
        return {pid for pid, _, title in rows if "shutting" not in title}

    def switch(self, upstreams: list[Upstream]) -> None:
        """Test the new config beside the live one, swap it in and reload (graceful).

        Returns once the new config answers *and* every worker of the old one has stopped accepting:
        nginx starts the new workers before it tells the old ones to quit, and for that moment both
        take connections, so one answer in the new colour alone does not mean the switch is done.
        """
        proxy = self.container()
        self.host.put_file(proxy, "/etc/nginx", "nginx.conf.next", self.config(upstreams))
        code, out = self.exec(["nginx", "-t", "-q", "-c", f"{CONFIG}.next"])
        if code:
            raise StepFailed(f"The new edge configuration was refused by nginx -t: {out.strip()}")
        old_workers = self.accepting_workers()
        code, out = self.exec(["sh", "-c", f"mv {CONFIG}.next {CONFIG} && nginx -s reload -c {CONFIG}"])
        if code:
            raise StepFailed(f"nginx reload failed: {out.strip()}")
        want = colors_label(upstreams)
        health = f"http://{self._local()}{HEALTH_PATH}"
        deadline = time.monotonic() + 15
        while True:
            code, out = self.exec(["timeout", "5", "wget", "-S", "-q", "-O", "/dev/null", health])
            if f"{COLOR_HEADER}: {want}" in out and not old_workers & self.accepting_workers():
                break
            if time.monotonic() > deadline:
                raise StepFailed(
                    f"The edge still serves the old configuration 15 s after reload: {out.strip()}"
                )
            time.sleep(0.05)
        self.host.log(f"edge: now serving {', '.join(u.address for u in upstreams) or 'nothing (503)'}")
