"""The one nginx renderer for every edge: pure text from an ``EdgeSpec``, no database, no settings.

Three edges are rendered by it:
- the single-host local edge (``tenants.domains.edge``): TLS for custom domains and platform hosts,
  everything proxied to the control plane itself;
- a compose target's edge (``deployments.engines.release_proxy``): the release proxy's internal
  listener (routes, colour header, ``/__edge/health``) plus, when the stack asks for it, TLS for
  ``*.<base>`` and every active custom domain, proxied to the live colour of the shop front;
- the release proxy alone (a target with no public TLS listeners).

Shops' hosts always refuse the control plane's paths (``SHOP_REFUSED``); HTTP-01 answers are
proxied to the control plane on every host's port 80.
"""

import re
from dataclasses import dataclass, field

# Control-plane paths, refused by the edge itself on shops' hosts (subdomains and custom domains).
# nginx matches locations on the decoded, slash-merged path, so /%6detrics or //admin/ are caught too.
SHOP_REFUSED = r"^/(metrics|readyz)/*$|^/(admin|django-rq|internal)(/|$)"
# On the admin host the staff pages stay; machine endpoints are scraped from the app directly.
ADMIN_REFUSED = r"^/(metrics|readyz)/*$|^/internal(/|$)"
# What the release listener hides (it sends every path to the app's routes).
RELEASE_REFUSED = r"^/+(metrics|readyz|internal/)"
HEALTH_PATH = "/__edge/health"
COLOR_HEADER = "X-Platform-Color"
HSTS = 'add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;'

# Listen addresses, upstream servers, host names, paths and labels go into nginx.conf as words.
_WORD = re.compile(r"^[A-Za-z0-9._:\[\]+*/~-]{1,250}$")


class UnsafeEdgeValue(ValueError):
    """A value that would not be a single nginx word (it could end a directive or open a block)."""


@dataclass(frozen=True)
class ReleaseListener:
    """The release proxy's own listener: routes by path to app upstreams, and the colour label."""

    listen: str
    label: str
    # (path prefix, upstream name); an empty upstream name answers 503 (no serving container).
    routes: list[tuple[str, str]]


@dataclass(frozen=True)
class EdgeSpec:
    prefix: str  # nginx.pid lives here
    temp: str  # nginx's temp folders (they must exist)
    error_log: str
    certs: str  # <name>.pem and <name>.key per custom domain
    upstreams: dict[str, list[str]] = field(default_factory=dict)
    control_plane: str = ""  # upstream for ACME answers (and the admin host when served)
    shop_front: str = ""  # upstream for shops' hosts; "" when no public listeners
    http_listen: str = ""  # public listeners; "" for none
    https_listen: str = ""
    https_port: int = 443  # in redirects
    base_domain: str = ""
    admin_host: str = ""  # served (local edge) when set
    platform_cert: tuple[str, str] | None = None  # (chain, key) paths for *.<base> (and the admin host)
    custom_domains: list[str] = field(default_factory=list)
    shared_tls: bool = False  # one server, certificate files chosen by SNI at the handshake
    user: str = ""  # workers' user and group ("nobody nogroup"); "" keeps nginx's default
    release: ReleaseListener | None = None
    comment: str = "Rendered by the platform; edits here are overwritten."


def _check(words: list[str]) -> None:
    bad = [w for w in words if not _WORD.fullmatch(str(w))]
    if bad:
        raise UnsafeEdgeValue(
            f"{str(bad[0])[:80]!r} cannot be written into nginx.conf; use host:port, a host name or a "
            "path (letters, digits, '.', '-', ':', '/', '[]', '+', '*')."
        )


def _hash_size(count: int) -> int:
    size = 512
    while size < count * 2:
        size *= 2
    return size


def _refuse(pattern: str) -> str:
    return f"location ~ {pattern} {{ return 404; }}"


def _upstream_name(name: str) -> str:
    return "app_" + name.replace("-", "_")


class _Writer:
    def __init__(self, spec: EdgeSpec) -> None:
        self.s = spec
        self.out: list[str] = []

    def add(self, *lines: str) -> None:
        self.out.extend(lines)

    def proxy(self, upstream: str) -> str:
        return f"proxy_pass http://{_upstream_name(upstream)};"

    def redirect(self) -> str:
        port = "" if self.s.https_port == 443 else f":{self.s.https_port}"
        return f"return 301 https://$host{port}$request_uri;"

    def acme(self) -> str:
        if not self.s.control_plane:
            return "location ^~ /.well-known/acme-challenge/ { return 404; }"
        return f"location ^~ /.well-known/acme-challenge/ {{ {self.proxy(self.s.control_plane)} }}"

    def site(
        self,
        names: list[str],
        *,
        upstream: str,
        refused: str,
        cert: tuple[str, str] | None,
        hsts: bool,
        comment: str,
    ) -> None:
        """One server for ``names``: plain HTTP (ACME, then a redirect when TLS is on) and HTTPS."""
        s = self.s
        tls = bool(cert and s.https_listen)
        self.add("", f"    # {comment}", "    server {")
        if s.http_listen:
            self.add(f"        listen {s.http_listen};")
        if tls:
            assert cert is not None
            self.add(
                f"        listen {s.https_listen} ssl;",
                f"        ssl_certificate {cert[0]};",
                f"        ssl_certificate_key {cert[1]};",
            )
        self.add(*(f"        server_name {' '.join(names[i : i + 8])};" for i in range(0, len(names), 8)))
        if hsts and tls:
            self.add(f"        {HSTS}")
        self.add(f"        {self.acme()}", f"        {_refuse(refused)}", "        location / {")
        if tls:
            self.add(f"            if ($scheme = http) {{ {self.redirect()} }}")
        self.add(f"            {self.proxy(upstream)}", "        }", "    }")

    def header(self) -> None:
        s = self.s
        names = len(s.custom_domains) + 4
        self.add(
            f"# {s.comment}",
            *([f"user {s.user};"] if s.user else []),
            "worker_processes 1;",
            f"pid {s.prefix}/nginx.pid;",
            f"error_log {s.error_log} warn;",
            "events { worker_connections 1024; }",
            "http {",
            "    access_log off;",
            *(
                f"    {kind}_temp_path {s.temp}/{kind};"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            ),
            f"    server_names_hash_max_size {_hash_size(names)};",
            "    server_names_hash_bucket_size 128;",
            "    ssl_protocols TLSv1.2 TLSv1.3;",
            "    ssl_session_cache shared:edge_tls:10m;",
            "    proxy_http_version 1.1;",
            # The client's Host as sent (with its port), so Django's CSRF origin check matches.
            "    proxy_set_header Host $http_host;",
            # Appended, never replaced: the app reads it right to left from TRUSTED_PROXIES (core.clientip).
            "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "    proxy_set_header X-Real-IP $remote_addr;",
            "    proxy_set_header X-Forwarded-Proto $scheme;",
            '    proxy_set_header Connection "";',
            # A colour that stops mid-cutover: the next server of the group takes the request.
            "    proxy_next_upstream error timeout http_502 http_503;",
        )
        for name, servers in s.upstreams.items():
            if servers:
                lines = " ".join(f"server {addr} max_fails=0;" for addr in servers)
                self.add(f"    upstream {_upstream_name(name)} {{ {lines} keepalive 16; }}")

    def default_servers(self) -> None:
        s = self.s
        if s.http_listen:
            self.add(
                "",
                "    # Any other host: the ACME answers (the control plane checks host and token) and",
                "    # the edge's own /healthz; nothing else.",
                "    server {",
                f"        listen {s.http_listen} default_server;",
                "        server_name _;",
                f"        {self.acme()}",
                "        location = /healthz { return 200 'ok'; }",
                "        location / { return 404; }",
                "    }",
            )
        if s.https_listen and (s.platform_cert or s.custom_domains):
            # An unknown name gets no certificate at all rather than another host's.
            self.add(
                "",
                "    server {",
                f"        listen {s.https_listen} ssl default_server;",
                "        server_name _;",
                "        ssl_reject_handshake on;",
                "    }",
            )

    def custom_domains(self) -> None:
        s = self.s
        if not s.custom_domains or not s.shop_front:
            return
        if s.shared_tls:
            # Config size, `nginx -t` and reload time stay flat as domains grow: no certificate is
            # loaded at reload, nginx opens the files named by SNI at each handshake.
            self.site(
                s.custom_domains,
                upstream=s.shop_front,
                refused=SHOP_REFUSED,
                hsts=False,
                cert=(f"{s.certs}/$ssl_server_name.pem", f"{s.certs}/$ssl_server_name.key"),
                comment="Custom domains (certificates chosen by SNI)",
            )
            return
        for name in s.custom_domains:
            self.site(
                [name],
                upstream=s.shop_front,
                refused=SHOP_REFUSED,
                hsts=False,
                cert=(f"{s.certs}/{name}.pem", f"{s.certs}/{name}.key"),
                comment=name,
            )

    def release_listener(self) -> None:
        r = self.s.release
        if r is None:
            return
        self.add(
            "",
            "    # The release proxy's own listener: the deployer's health and colour checks.",
            "    server {",
            f"        listen {r.listen};",
            f"        add_header {COLOR_HEADER} {r.label} always;",
            f"        location = {HEALTH_PATH} {{ return 200 'ok'; }}",
            # The app's machine endpoints are for Prometheus and probes on its own address.
            f"        {_refuse(RELEASE_REFUSED)}",
        )
        for path, upstream in sorted(r.routes, key=lambda kv: -len(kv[0])):
            body = self.proxy(upstream) if self.s.upstreams.get(upstream) else "return 503;"
            self.add(f"        location {path} {{ {body} }}")
        self.add("    }")


def render(spec: EdgeSpec) -> str:
    """nginx.conf for ``spec``; UnsafeEdgeValue if any value would not be a single nginx word."""
    words = [
        spec.prefix,
        spec.temp,
        spec.error_log,
        spec.certs,
        *spec.custom_domains,
        *spec.upstreams,
        *(a for servers in spec.upstreams.values() for a in servers),
        *(spec.platform_cert or ()),
    ]
    words += [w for w in (spec.http_listen, spec.https_listen, spec.base_domain, spec.admin_host) if w]
    words += [w for w in (spec.user or "").split()]
    if spec.release:
        words += [spec.release.listen, spec.release.label, *(p for p, _ in spec.release.routes)]
    _check(words)
    w = _Writer(spec)
    w.header()
    w.default_servers()
    if spec.admin_host and spec.control_plane:
        w.site(
            [spec.admin_host],
            upstream=spec.control_plane,
            refused=ADMIN_REFUSED,
            cert=spec.platform_cert,
            hsts=False,
            comment="The control plane's host: the admin and the RQ dashboard, never machine endpoints.",
        )
    if spec.base_domain and spec.shop_front:
        # ".base" also means base itself, which clashes with an admin block named base.
        names = [f"*.{spec.base_domain}" if spec.admin_host == spec.base_domain else f".{spec.base_domain}"]
        w.site(
            names,
            upstream=spec.shop_front,
            refused=SHOP_REFUSED,
            cert=spec.platform_cert,
            hsts=True,
            comment="Shops' platform subdomains: only what shops have.",
        )
    w.custom_domains()
    w.release_listener()
    w.add("}", "")
    return "\n".join(w.out)
