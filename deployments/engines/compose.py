"""Compose target: the stack applied to one Docker Engine through its API (the ``docker`` SDK).

Containers are found by labels, never by guessing. App services run as
``<project>-<service>-<replica>-<color>`` beside the previous color until the edge (an nginx
container named ``<project>-edge``) is switched to them; stateful services run as
``<project>-<service>`` and are recreated only when their configuration hash changes.

With ``network_mode: host`` (engines started with ``--bridge=none``) every replica and color gets
its own port: ``port + 2 * replica + (1 if green)``; otherwise containers share a project network
and listen on ``port`` itself.
"""

import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from deployments.docker_client import docker_client
from deployments.errors import DeploymentValidationError, StepFailed
from deployments.models import Release, Target
from deployments.recorder import Recorder
from deployments.stack import app_services, render_edge_config, stateful_services
from deployments.stack_model import duration_seconds

LABEL = "platform.project"
EDGE_CONF = "/etc/nginx/nginx.conf"


def other(color: str) -> str:
    return "green" if color == "blue" else "blue"


@dataclass(frozen=True)
class Instance:
    service: str
    replica: int
    color: str


class ComposeEngine:
    def __init__(self, target: Target, recorder: Recorder | None = None):
        self.target = target
        self.stack = target.stack
        self.project = target.project or target.name
        self.rec = recorder
        self.host_mode = self.stack.get("network_mode") == "host"
        self._client = None
        # What this run did, so undo() knows what to put back.
        self.created: list[str] = []
        self.old_serving: list[Instance] = []
        self.switched = False

    # -- plumbing ---------------------------------------------------------------------------------

    @property
    def client(self):
        if self._client is None:
            t = self.target
            self._client = docker_client(
                base_url=t.docker_host,
                tls_ca=t.docker_tls_ca,
                tls_cert=t.docker_tls_cert,
                tls_key=t.docker_tls_key,
            )
        return self._client

    def log(self, text: str) -> None:
        if self.rec:
            self.rec.log(text)

    def check_reachable(self) -> str:
        info = self.client.version()
        return (
            f"Docker Engine {info.get('Version')} (API {info.get('ApiVersion')}) at {self.target.docker_host}"
        )

    def name(self, inst: Instance) -> str:
        return f"{self.project}-{inst.service}-{inst.replica}-{inst.color}"

    def port(self, inst: Instance) -> int:
        base = self.stack["services"][inst.service]["port"]
        return base + 2 * inst.replica + (1 if inst.color == "green" else 0) if self.host_mode else base

    def address(self, inst: Instance) -> str:
        return f"127.0.0.1:{self.port(inst)}" if self.host_mode else f"{self.name(inst)}:{self.port(inst)}"

    def networks(self) -> list[str]:
        """The project's networks (compose's ``<project>_default`` unless the stack names its own)."""
        if self.host_mode:
            return []
        return [f"{self.project}_{n}" for n in (self.stack.get("networks") or ["default"])]

    def attach(self, kwargs: dict, alias: str) -> None:
        if self.host_mode:
            kwargs["network_mode"] = "host"
            return
        first = self.networks()[0]
        kwargs["network"] = first
        # Reachable by service name inside the project network, like compose does.
        kwargs["networking_config"] = {first: self.client.api.create_endpoint_config(aliases=[alias])}

    def attach_rest(self, container, alias: str) -> None:
        for net in self.networks()[1:]:
            self.client.networks.get(net).connect(container, aliases=[alias])

    def containers(self, **labels: str):
        filters = {"label": [f"{LABEL}={self.project}", *(f"platform.{k}={v}" for k, v in labels.items())]}
        return self.client.containers.list(all=True, filters=filters)

    def replicas(self, service: str) -> int:
        return self.stack["services"][service].get("replicas", 1)

    def serving(self, color: str) -> list[Instance]:
        return [Instance(s, r, color) for s in app_services(self.stack) for r in range(self.replicas(s))]

    def secret_env(self, svc: dict) -> dict[str, str]:
        env = {}
        for var, ref in (svc.get("secrets") or {}).items():
            value = os.environ.get(ref)
            if value is None:
                raise StepFailed(
                    f"Secret {ref!r} (for {var}) is not set in the deploying worker's environment; "
                    "set it there (or in the worker's .env) and deploy again."
                )
            env[var] = value
        if self.rec:
            self.rec.add_secrets(env.values())
        return env

    def healthcheck(self, svc: dict) -> dict | None:
        check = svc.get("healthcheck")
        if not check:
            return None
        ns = 1_000_000_000
        out = {
            "test": [part.replace("$$", "$") for part in check["test"]],
            "retries": int(check.get("retries", 3)),
        }
        for key in ("interval", "timeout", "start_period"):
            if key in check:
                out[key] = int(duration_seconds(check[key]) * ns)
        return out

    def volumes(self, svc: dict) -> list[str]:
        out = []
        for mount in svc.get("volumes", []):
            source, rest = mount.split(":", 1)
            out.append(f"{source}:{rest}" if source.startswith("/") else f"{self.project}_{source}:{rest}")
        return out

    def ensure_image(self, ref: str) -> None:
        try:
            self.client.images.get(ref)
        except ImageNotFound:
            self.log(f"pulling {ref}")
            try:
                self.client.images.pull(ref)
            except DockerException as exc:
                raise StepFailed(f"Image {ref} is not on the host and could not be pulled: {exc}") from None

    def run_container(self, *, name: str, image: str, svc: dict, labels: dict, env: dict) -> None:
        try:
            self.client.containers.get(name).remove(force=True)
        except NotFound:
            pass
        kwargs = dict(
            image=image,
            name=name,
            detach=True,
            labels={LABEL: self.project, **labels},
            environment=env,
            volumes=self.volumes(svc),
            healthcheck=self.healthcheck(svc),
            restart_policy={"Name": svc.get("restart", "unless-stopped")},
        )
        if svc.get("command"):
            # The stack is written for compose, where a literal $ is spelled $$.
            kwargs["command"] = [str(part).replace("$$", "$") for part in svc["command"]]
        if svc.get("init"):
            kwargs["init"] = True
        alias = labels.get("platform.service", name)
        self.attach(kwargs, alias)
        try:
            container = self.client.containers.create(**kwargs)
            self.attach_rest(container, alias)
            container.start()
        except APIError as exc:
            raise StepFailed(f"Could not start {name}: {exc.explanation or exc}") from None

    # -- plan -------------------------------------------------------------------------------------

    def stateful_hash(self, name: str) -> str:
        svc = self.stack["services"][name]
        desired = {
            k: svc.get(k)
            for k in (
                "image",
                "command",
                "environment",
                "secrets",
                "volumes",
                "healthcheck",
                "restart",
                "init",
            )
        }
        desired["network"] = ",".join(self.networks()) or "host"
        return hashlib.sha256(json.dumps(desired, sort_keys=True).encode()).hexdigest()[:16]

    def plan(self, release: Release, strategy: str) -> dict:
        self.check_reachable()
        missing = sorted(
            {
                ref
                for svc in self.stack["services"].values()
                for ref in (svc.get("secrets") or {}).values()
                if ref not in os.environ
            }
        )
        if missing:
            raise DeploymentValidationError(
                f"Secrets {', '.join(missing)} are not set in the deploying worker's environment; set them "
                "there (or in its .env) and deploy again."
            )
        current_images: dict[str, str] = {}
        for c in self.containers(role="app"):
            if c.status == "running":
                current_images[c.labels.get("platform.service")] = c.labels.get("platform.image", "")
        stateful = {}
        for name in stateful_services(self.stack):
            found = self.containers(role="stateful", service=name)
            if not found:
                stateful[name] = "create"
            elif found[0].labels.get("platform.config-hash") != self.stateful_hash(name):
                stateful[name] = "recreate (configuration changed)"
            else:
                stateful[name] = "unchanged" if found[0].status == "running" else "start (stopped)"
        existing_volumes = {
            v.name for v in self.client.volumes.list(filters={"label": f"{LABEL}={self.project}"})
        }
        volumes = {
            v: "unchanged" if f"{self.project}_{v}" in existing_volumes else "create"
            for v in self.stack.get("volumes", [])
        }
        apps = {}
        for name in app_services(self.stack):
            new = release.images[name]
            old = current_images.get(name)
            apps[name] = {
                "from": old,
                "to": new,
                "replicas": self.replicas(name),
                "change": "unchanged image (restarted)" if old == new else ("replace" if old else "create"),
            }
        return {
            "target": self.target.name,
            "kind": "compose",
            "project": self.project,
            "strategy": strategy,
            "apps": apps,
            "stateful": stateful,
            "volumes": volumes,
            "edge": "create" if not self.containers(role="edge") else "switch upstreams",
        }

    # -- apply ------------------------------------------------------------------------------------

    def reconcile(self) -> None:
        for vol in self.stack.get("volumes", []):
            full = f"{self.project}_{vol}"
            try:
                self.client.volumes.get(full)
            except NotFound:
                self.client.volumes.create(name=full, labels={LABEL: self.project})
                self.log(f"volume {full}: created")
        for net in self.networks():
            try:
                self.client.networks.get(net)
            except NotFound:
                self.client.networks.create(net, driver="bridge", labels={LABEL: self.project})
                self.log(f"network {net}: created")
        for name in stateful_services(self.stack):
            svc = self.stack["services"][name]
            want = self.stateful_hash(name)
            found = self.containers(role="stateful", service=name)
            if found and found[0].labels.get("platform.config-hash") == want:
                if found[0].status != "running":
                    found[0].start()
                    self.log(f"{name}: started (was {found[0].status})")
                else:
                    self.log(f"{name}: unchanged")
                continue
            self.ensure_image(svc["image"])
            self.run_container(
                name=f"{self.project}-{name}",
                image=svc["image"],
                svc=svc,
                labels={"platform.role": "stateful", "platform.service": name, "platform.config-hash": want},
                env={
                    **{k: str(v) for k, v in (svc.get("environment") or {}).items()},
                    **self.secret_env(svc),
                },
            )
            self.log(f"{name}: {'recreated (configuration changed)' if found else 'created'}")

    def start_instance(self, inst: Instance, release: Release) -> None:
        svc = self.stack["services"][inst.service]
        image = release.images[inst.service]
        self.ensure_image(image)
        env = {
            **{k: str(v) for k, v in (svc.get("environment") or {}).items()},
            "PORT": str(self.port(inst)),
            "RELEASE_VERSION": release.version,
            **self.secret_env(svc),
        }
        self.run_container(
            name=self.name(inst),
            image=image,
            svc=svc,
            env=env,
            labels={
                "platform.role": "app",
                "platform.service": inst.service,
                "platform.replica": str(inst.replica),
                "platform.color": inst.color,
                "platform.release": release.version,
                "platform.image": image,
            },
        )
        self.created.append(self.name(inst))
        self.log(f"{self.name(inst)}: started {image} on {self.address(inst)}")

    def _logs_tail(self, container) -> str:
        try:
            return container.logs(tail=15).decode(errors="replace").strip()
        except DockerException:
            return ""

    def wait_healthy(self, instances: list[Instance], timeout: float) -> None:
        """Container health (when the stack defines a check), then an HTTP probe from the edge."""
        deadline = time.monotonic() + timeout
        pending = list(instances)
        while pending:
            inst = pending[0]
            container = self.client.containers.get(self.name(inst))
            state = container.attrs["State"]
            health = (state.get("Health") or {}).get("Status")
            restarts = container.attrs.get("RestartCount", 0)
            if restarts >= 2:
                raise StepFailed(
                    f"{self.name(inst)} keeps restarting ({restarts} restarts, exit code "
                    f"{state.get('ExitCode')}); last log lines:\n{self._logs_tail(container)}"
                )
            if state["Status"] in ("exited", "dead"):
                raise StepFailed(
                    f"{self.name(inst)} exited with code {state.get('ExitCode')}; last log lines:\n"
                    f"{self._logs_tail(container)}"
                )
            ok = health in (None, "healthy") and state["Status"] == "running"
            if ok:
                ok, detail = self.probe(inst)
            else:
                detail = f"container health: {health}"
            if ok:
                self.log(f"{self.name(inst)}: healthy ({detail})")
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                last = (state.get("Health") or {}).get("Log") or []
                check_out = last[-1].get("Output", "").strip() if last else ""
                raise StepFailed(
                    f"{self.name(inst)} did not become healthy within {timeout:.0f} s ({detail}). "
                    f"Last health check output: {check_out or 'none'}. "
                    f"Last log lines:\n{self._logs_tail(container)}"
                )
            time.sleep(0.2)

    def probe(self, inst: Instance) -> tuple[bool, str]:
        path = self.stack["services"][inst.service].get("health_path", "/")
        url = f"http://{self.address(inst)}{path}"
        # timeout(1) rather than wget -T, which crashes in some busybox builds.
        code, out = self.edge_exec(["timeout", "5", "wget", "-q", "-O", "/dev/null", url])
        return code == 0, f"GET {url} " + ("ok" if code == 0 else f"failed: {out.strip()[:200]}")

    # -- edge -------------------------------------------------------------------------------------

    def edge_container(self):
        try:
            return self.client.containers.get(f"{self.project}-edge")
        except NotFound:
            return None

    def edge_exec(self, cmd: list[str]) -> tuple[int, str]:
        edge = self.edge_container()
        if edge is None:
            raise StepFailed("The edge container is gone; deploy again to recreate it.")
        result = edge.exec_run(cmd)
        return result.exit_code, result.output.decode(errors="replace")

    def edge_config(self, serving: list[Instance]) -> str:
        # In its own network namespace the edge listens on every address; docker publishes the port.
        listen = self.target.edge_listen if self.host_mode else self.target.edge_listen.rpartition(":")[2]
        upstreams = {
            service: [self.address(i) for i in serving if i.service == service]
            for service in app_services(self.stack)
        }
        colors = "+".join(sorted({i.color for i in serving})) or "none"
        return render_edge_config(stack=self.stack, listen=listen, upstreams=upstreams, label=colors)

    @staticmethod
    def _tar(name: str, text: str) -> bytes:
        data = text.encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    def edge_ensure(self, serving: list[Instance]) -> None:
        edge = self.edge_container()
        if edge is not None and edge.status == "running":
            return
        if edge is not None:
            edge.remove(force=True)
        self.ensure_image(self.target.edge_image)
        kwargs = dict(
            image=self.target.edge_image,
            name=f"{self.project}-edge",
            detach=True,
            labels={LABEL: self.project, "platform.role": "edge"},
            command=["nginx", "-c", EDGE_CONF, "-g", "daemon off;"],
            restart_policy={"Name": "unless-stopped"},
        )
        self.attach(kwargs, "edge")
        if not self.host_mode:
            host, _, port = self.target.edge_listen.rpartition(":")
            kwargs["ports"] = {f"{port}/tcp": (host or "0.0.0.0", int(port))}
        edge = self.client.containers.create(**kwargs)
        self.attach_rest(edge, "edge")
        edge.put_archive("/etc/nginx", self._tar("nginx.conf", self.edge_config(serving)))
        edge.start()
        deadline = time.monotonic() + 15
        while self.edge_exec(
            ["timeout", "5", "wget", "-q", "-O", "/dev/null", f"http://{self._edge_local()}/__edge/health"]
        )[0]:
            if time.monotonic() > deadline:
                raise StepFailed(f"The edge did not start; its log:\n{self._logs_tail(edge)}")
            time.sleep(0.1)
        self.log(f"edge {self.project}-edge: started on {self.target.edge_listen}")

    def _edge_local(self) -> str:
        """The edge's address as seen from inside the edge container."""
        host, _, port = self.target.edge_listen.rpartition(":")
        return f"{'127.0.0.1' if host in ('', '0.0.0.0') or not self.host_mode else host}:{port}"

    # nginx's worker processes and whether each still accepts connections ("worker process" in its
    # title) or is finishing its last requests ("worker process is shutting down").
    _WORKERS = (
        'for d in /proc/[0-9]*; do t=$(cat "$d/cmdline" 2>/dev/null); '
        'case "$t" in "nginx: worker process"*) echo "${d#/proc/} $t";; esac; done'
    )

    def edge_accepting_workers(self) -> set[str]:
        code, out = self.edge_exec(["sh", "-c", self._WORKERS])
        if code:
            raise StepFailed(f"Could not list the edge's nginx workers: {out.strip()}")
        rows = (line.partition(" ") for line in out.splitlines())
        return {pid for pid, _, title in rows if "shutting" not in title}

    def edge_switch(self, serving: list[Instance]) -> None:
        """Test the new config beside the live one, swap it in and reload (graceful).

        Returns once the new config answers *and* every worker of the old one has stopped accepting:
        nginx starts the new workers before it tells the old ones to quit, and for that moment both
        take connections, so one answer in the new colour alone does not mean the switch is done.
        """
        edge = self.edge_container()
        edge.put_archive("/etc/nginx", self._tar("nginx.conf.next", self.edge_config(serving)))
        code, out = self.edge_exec(["nginx", "-t", "-q", "-c", f"{EDGE_CONF}.next"])
        if code:
            raise StepFailed(f"The new edge configuration was refused by nginx -t: {out.strip()}")
        old_workers = self.edge_accepting_workers()
        code, out = self.edge_exec(
            ["sh", "-c", f"mv {EDGE_CONF}.next {EDGE_CONF} && nginx -s reload -c {EDGE_CONF}"]
        )
        if code:
            raise StepFailed(f"nginx reload failed: {out.strip()}")
        want = "+".join(sorted({i.color for i in serving})) or "none"
        health = f"http://{self._edge_local()}/__edge/health"
        deadline = time.monotonic() + 15
        while True:
            code, out = self.edge_exec(["timeout", "5", "wget", "-S", "-q", "-O", "/dev/null", health])
            if f"X-Platform-Color: {want}" in out and not old_workers & self.edge_accepting_workers():
                break
            if time.monotonic() > deadline:
                raise StepFailed(
                    f"The edge still serves the old configuration 15 s after reload: {out.strip()}"
                )
            time.sleep(0.05)
        self.log(f"edge: now serving {', '.join(self.address(i) for i in serving) or 'nothing (503)'}")

    # -- strategies -------------------------------------------------------------------------------

    def current_color(self) -> str:
        return self.target.live_color or ""

    def apply(self, release: Release, strategy: str, step: Callable, migrate: Callable[[], None]) -> str:
        """Roll ``release`` out; returns the new live color. Raises StepFailed (call undo())."""
        live = self.current_color()
        new = other(live) if live else "blue"
        self.old_serving = self.serving(live) if live else []
        with step("reconcile"):
            self.reconcile()
            self.edge_ensure(self.old_serving)
            for c in self.containers(role="app", color=new):
                self.log(f"{c.name}: removing leftover from an earlier run")
                c.remove(force=True)
        timeout = float(self.target.health_timeout_seconds)
        if strategy == "rolling":
            with step("migrate"):
                migrate()
            serving = list(self.old_serving)
            for inst in self.serving(new):
                label = f"{inst.service} replica {inst.replica}"
                with step(f"replace {label}"):
                    self.start_instance(inst, release)
                    self.wait_healthy([inst], timeout)
                    old = Instance(inst.service, inst.replica, live)
                    serving = [i for i in serving if i != old] + [inst]
                    self.switched = True
                    self.edge_switch(serving)
                    self.drain_and_stop([old] if live else [])
        else:
            new_set = self.serving(new)
            with step(f"start {new}"):
                for inst in new_set:
                    self.start_instance(inst, release)
            with step("migrate"):
                migrate()
            with step("health"):
                self.wait_healthy(new_set, timeout)
            with step("switch edge"):
                self.switched = True
                self.edge_switch(new_set)
            with step(f"drain and stop {live or 'previous'}"):
                self.drain_and_stop(self.old_serving)
        with step("clean up"):
            for inst in self.old_serving:
                try:
                    self.client.containers.get(self.name(inst)).remove(force=True)
                    self.log(f"{self.name(inst)}: removed")
                except NotFound:
                    pass
        return new

    def drain_and_stop(self, old: list[Instance]) -> None:
        if not old:
            return
        self.log(f"draining {len(old)} container(s) for {self.target.drain_seconds:g} s")
        time.sleep(self.target.drain_seconds)
        for inst in old:
            try:
                self.client.containers.get(self.name(inst)).stop(timeout=10)
                self.log(f"{self.name(inst)}: stopped")
            except NotFound:
                pass

    def undo(self) -> None:
        """Put the previous release back in front: restart its containers, switch back, drop ours."""
        for inst in self.old_serving:
            container = self.client.containers.get(self.name(inst))
            if container.status != "running":
                container.start()
                self.log(f"{self.name(inst)}: restarted")
        if self.switched:
            self.wait_healthy(self.old_serving, float(self.target.health_timeout_seconds))
            self.edge_switch(self.old_serving)
            time.sleep(self.target.drain_seconds)
        for name in self.created:
            try:
                self.client.containers.get(name).remove(force=True)
                self.log(f"{name}: removed")
            except NotFound:
                pass
