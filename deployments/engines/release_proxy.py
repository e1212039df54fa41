"""The target's edge: the nginx container in front of a compose target's app services.

It is what blue-green and rolling deployments switch (its upstreams are the app containers of the
colour(s) serving now), and, when the stack gives it public listeners (``edge.http``/``edge.https``),
the edge shops are served through: TLS for ``*.<PLATFORM_BASE_DOMAIN>`` and every active custom
domain, proxied to the live colour of the shop front. Every change (a switch, or certificates the
control plane pushes) goes through ``push``: new certificate generation and config beside the live
ones, ``nginx -t``, swap, reload, and wait until no old worker still accepts connections. The config
comes from the one renderer (``tenants.domains.nginx_conf``) that also renders the local edge.

On the host it is the container ``<project>-edge`` labelled ``platform.role=edge`` (names kept from
before it had its own module, so existing deployments keep working); the step that switches it is
still called "switch edge" in the step log.
"""

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import django_rq
from django.conf import settings
from docker.models.containers import Container

from deployments.engines.docker_host import DockerHost
from deployments.engines.edge_material import CERTS, EdgeMaterial, edge_material, generation_new, material_tar
from deployments.errors import StepFailed
from deployments.stack import EdgeTls, app_services, edge_public, render_proxy_config

CONFIG = "/etc/nginx/nginx.conf"
# Host names and labels of the proxy container; existing hosts have them, so they stay.
CONTAINER_SUFFIX = "-edge"
ROLE = "edge"
HEALTH_PATH = "/__edge/health"  # answered by the proxy itself (see render_proxy_config)
COLOR_HEADER = "X-Platform-Color"
# What the edge serves now, kept beside its config so a certificate push outside a deployment keeps it.
STATE = "platform-upstreams.json"


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
    # title) or is finishing its last requests ("worker process is shutting down"), and each one's
    # group ("<pid> Gid: real effective ...").
    _WORKERS_GID = (
        'for d in /proc/[0-9]*; do t=$(cat "$d/cmdline" 2>/dev/null); '
        'case "$t" in "nginx: worker process"*) echo "${d#/proc/} $t"; '
        'echo "${d#/proc/} $(grep ^Gid: "$d/status")";; esac; done'
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

    @property
    def public(self) -> tuple[str, str]:
        """The public (http, https) listeners as written in the container's config ('' for none)."""
        http, https = edge_public(self.stack)
        return (self._inner(http) if http else "", self._inner(https) if https else "")

    def _inner(self, listen: str) -> str:
        # In its own network namespace the proxy listens on every address; docker publishes the port.
        return listen if self.host.host_mode else listen.rpartition(":")[2]

    def config(self, upstreams: list[Upstream], tls: EdgeTls | None = None) -> str:
        by_service = {
            service: [u.address for u in upstreams if u.service == service]
            for service in app_services(self.stack)
        }
        return render_proxy_config(
            stack=self.stack,
            listen=self._inner(self.listen),
            upstreams=by_service,
            label=colors_label(upstreams),
            tls=tls,
        )

    def _tls(self, material: EdgeMaterial, generation: str) -> EdgeTls:
        http, https = self.public
        return EdgeTls(
            http_listen=http,
            https_listen=https,
            certs=f"{CERTS}/{generation}",
            domains=material.names,
            platform=material.platform is not None,
            acme_upstream=settings.EDGE_ACME_UPSTREAM or settings.EDGE_UPSTREAM,
        )

    def _local(self) -> str:
        """The proxy's address as seen from inside its container."""
        host, _, port = self.listen.rpartition(":")
        return f"{'127.0.0.1' if host in ('', '0.0.0.0') or not self.host.host_mode else host}:{port}"

    def _published(self) -> str:
        return ",".join(x for x in (self.listen, *edge_public(self.stack)) if x)

    def ensure(self, upstreams: list[Upstream]) -> None:
        """Start the proxy (serving ``upstreams``) unless it runs; a stopped one is replaced, and so is
        one whose published listeners the stack changed."""
        proxy = self.container()
        if proxy is not None and proxy.status == "running":
            if proxy.labels.get("platform.edge-listen", self.listen) == self._published():
                return
            self.host.log(f"edge {self.name}: listeners changed to {self._published()}; recreating it")
        if proxy is not None:
            proxy.remove(force=True)
        self.host.ensure_image(self.image)
        extra: dict[str, Any] = {}
        if not self.host.host_mode:
            ports = {}
            for listen in self._published().split(","):
                host, _, port = listen.rpartition(":")
                ports[f"{port}/tcp"] = (host or "0.0.0.0", int(port))
            extra["ports"] = ports
        proxy = self.host.create(
            name=self.name,
            image=self.image,
            labels={"platform.role": ROLE, "platform.edge-listen": self._published()},
            alias=ROLE,
            command=["nginx", "-c", CONFIG, "-g", "daemon off;"],
            restart_policy={"Name": "unless-stopped"},
            **extra,
        )
        self.host.put_file(proxy, "/etc/nginx", "nginx.conf", self.config(upstreams))
        self.host.put_file(proxy, "/etc/nginx", STATE, self._state(upstreams))
        proxy.start()
        deadline = time.monotonic() + 15
        while self.exec(
            ["timeout", "5", "wget", "-q", "-O", "/dev/null", f"http://{self._local()}{HEALTH_PATH}"]
        )[0]:
            if time.monotonic() > deadline:
                raise StepFailed(f"The edge did not start; its log:\n{self.host.logs_tail(proxy)}")
            time.sleep(0.1)
        self.host.log(f"edge {self.name}: started on {self._published()}")
        if any(self.public):
            self.push(upstreams)

    def _workers_and_gid(self) -> tuple[list[str], int]:
        """The accepting workers' pids and their group (keys are readable by it: workers open them at
        the handshake), in one exec."""
        # Retried briefly: right after a reload, or on a loaded host, the listing can catch no worker
        # that has taken its title yet.
        deadline = time.monotonic() + 5
        while True:
            code, out = self.exec(["sh", "-c", self._WORKERS_GID])
            pids, gid = [], -1
            for line in out.splitlines() if code == 0 else []:
                pid, _, rest = line.partition(" ")
                if rest.startswith("Gid:"):
                    gid = int(rest.split()[2])
                elif "shutting" not in rest:
                    pids.append(pid)
            if not (code or gid < 0 or not pids):
                break
            if time.monotonic() > deadline:
                raise StepFailed(
                    f"The edge runs no nginx worker to hand the new configuration to: {out.strip()}"
                )
            time.sleep(0.2)
        return pids, gid

    @staticmethod
    def _state(upstreams: list[Upstream]) -> str:
        return json.dumps([[u.service, u.address, u.color] for u in upstreams])

    def current_upstreams(self) -> list[Upstream]:
        code, out = self.exec(["cat", f"/etc/nginx/{STATE}"])
        if code:
            raise StepFailed(
                f"The edge {self.name} does not say what it serves; deploy again to recreate it."
            )
        return [Upstream(*row) for row in json.loads(out)]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # A deployment's switch and a certificate push must not interleave on one edge.
        lock = django_rq.get_connection("default").lock(f"platform:target-edge:{self.name}", timeout=300)
        if not lock.acquire(blocking=True, blocking_timeout=120):
            raise StepFailed(f"The edge {self.name} is busy with another change for over 120 s; try again.")
        try:
            yield
        finally:
            lock.release()

    def switch(self, upstreams: list[Upstream]) -> None:
        """Serve ``upstreams`` (with the current certificates); see ``push``."""
        self.push(upstreams)

    def push(self, upstreams: list[Upstream] | None = None) -> int:
        """Put the current certificates and a config for ``upstreams`` (by default: what it serves
        now) on the edge; returns the number of custom domains it serves over TLS.

        The new config is tested beside the live one (a refused one changes nothing and its
        certificates are removed again), swapped in and reloaded. Returns once the new config answers
        *and* every worker of the old one has stopped accepting: nginx starts the new workers before it
        tells the old ones to quit, and for that moment both take connections. Only then is the
        previous certificate generation removed, so no handshake ever misses its files.
        """
        with self._locked():
            return self._push(upstreams)

    def _push(self, upstreams: list[Upstream] | None) -> int:
        # Three calls to the engine: list the workers, one archive (certificates, config, state), one
        # script that tests, swaps, reloads, waits and cleans up; each call costs a round trip.
        proxy = self.container()
        if proxy is None:
            raise StepFailed("The edge container is gone; deploy again to recreate it.")
        if upstreams is None:
            upstreams = self.current_upstreams()
        old_workers, gid = self._workers_and_gid()
        material, generation, tls = None, "", None
        if any(self.public):
            material, generation = edge_material(), generation_new()
            tls = self._tls(material, generation)
        files = {"nginx.conf.next": self.config(upstreams, tls), f"{STATE}.next": self._state(upstreams)}
        proxy.put_archive("/etc/nginx", material_tar(material, generation, key_gid=gid, files=files))
        code, out = self.exec(
            ["sh", "-c", self._swap_script(generation, old_workers, colors_label(upstreams))]
        )
        if code == 3:
            raise StepFailed(
                f"nginx -t refused the new edge configuration (the live one is unchanged): {out.strip()}"
            )
        if code == 4:
            raise StepFailed(f"nginx reload failed: {out.strip()}")
        if code:
            raise StepFailed(f"The edge still serves the old configuration 15 s after reload: {out.strip()}")
        domains = len(material.domains) if material else 0
        served = ", ".join(u.address for u in upstreams) or "nothing (503)"
        self.host.log(
            f"edge: now serving {served}" + (f" and {domains} custom domain(s) over TLS" if tls else "")
        )
        return domains

    def _swap_script(self, generation: str, old_workers: list[str], want: str) -> str:
        """Test the new config beside the live one (refused: drop its certificates, exit 3), swap and
        reload (exit 4), then wait until the new config answers *and* every old worker has stopped
        accepting (nginx starts the new workers before it tells the old ones to quit, and for that
        moment both take connections); then remove older certificate generations."""
        health = f"http://{self._local()}{HEALTH_PATH}"
        drop = f"rm -rf {CERTS}/{generation}" if generation else ":"
        return f"""
cd /etc/nginx
# The generation the live config (and so the old workers) uses.
prev=$(grep -o "{CERTS}/g[0-9a-f]*" {CONFIG} | head -n 1); prev=${{prev##*/}}
if ! out=$(nginx -t -q -c {CONFIG}.next 2>&1); then {drop}; rm -f {CONFIG}.next; echo "$out"; exit 3; fi
mv {CONFIG}.next {CONFIG} && mv {STATE}.next {STATE} || exit 4
out=$(nginx -s reload -c {CONFIG} 2>&1) || {{ echo "$out"; exit 4; }}
i=0
while :; do
  ok=1
  timeout 5 wget -S -q -O /dev/null {health} 2>&1 | grep -q "{COLOR_HEADER}: {want}" || ok=0
  for p in {" ".join(old_workers)}; do
    case "$(cat /proc/$p/cmdline 2>/dev/null)" in *shutting*) ;; "nginx: worker process"*) ok=0;; esac
  done
  [ $ok = 1 ] && break
  i=$((i+1)); [ $i -gt 300 ] && {{ timeout 5 wget -S -q -O /dev/null {health} 2>&1; exit 5; }}
  sleep 0.05
done
# Keep the generation the old workers were started with: a connection one of them accepted just
# before the reload may send its ClientHello only now. Drop from it what the new one no longer
# has (removed domains), and every older generation.
cd {CERTS} 2>/dev/null || exit 0
for d in g*; do [ "$d" = "{generation}" ] || [ "$d" = "$prev" ] || rm -rf "$d"; done
if [ -n "$prev" ] && [ -d "$prev" ]; then
  for f in "$prev"/*; do [ -e "{generation}/${{f#$prev/}}" ] || rm -f "$f"; done
fi
exit 0
"""
