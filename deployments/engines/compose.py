"""Compose target: the stack applied to one Docker Engine through its API (the ``docker`` SDK).

Containers are found by labels, never by guessing. App services run as
``<project>-<service>-<replica>-<color>`` beside the previous color until the release proxy (an
nginx container, ``release_proxy.py``) is switched to them; stateful services run as
``<project>-<service>`` and are recreated only when their configuration hash changes.

With ``network_mode: host`` (engines started with ``--bridge=none``) every replica and color gets
its own port: ``port + 2 * replica + (1 if green)``; otherwise containers share a project network
and listen on ``port`` itself.

This module holds the strategies (blue-green, rolling, undo) and the stack's layout on the host; the
Docker plumbing is ``docker_host.DockerHost`` and the proxy is ``release_proxy.ReleaseProxy``.
"""

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from docker.errors import APIError

from deployments.engines import Step, oneoff
from deployments.engines.docker_host import DockerHost
from deployments.engines.release_proxy import ReleaseProxy, Upstream
from deployments.errors import StepFailed
from deployments.models import Release, Target
from deployments.recorder import Recorder
from deployments.secrets import stack_secrets_resolve
from deployments.stack import app_services, stateful_services
from deployments.stack_model import duration_seconds


def other(color: str) -> str:
    return "green" if color == "blue" else "blue"


@dataclass(frozen=True)
class Instance:
    service: str
    replica: int
    color: str


class ComposeEngine:
    def __init__(self, target: Target, recorder: Recorder | None = None) -> None:
        self.target = target
        self.stack = target.stack
        self.project = target.project or target.name
        self.rec = recorder
        self.host_mode = self.stack.get("network_mode") == "host"
        self.host = DockerHost(target, project=self.project, networks=self.networks(), log=self.log)
        self.proxy = ReleaseProxy(
            self.host, stack=self.stack, listen=target.edge_listen, image=target.edge_image
        )
        # What this run did, so undo() knows what to put back.
        self.created: list[str] = []
        self.old_serving: list[Instance] = []
        self.switched = False
        self._secret_values: dict[str, str] | None = None

    @property
    def touched(self) -> bool:
        """Whether apply() started anything undo() must clean up."""
        return bool(self.created)

    def log(self, text: str) -> None:
        if self.rec:
            self.rec.log(text)

    def check_reachable(self) -> str:
        return self.host.describe()

    # -- layout -----------------------------------------------------------------------------------

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

    def replicas(self, service: str) -> int:
        return self.stack["services"][service].get("replicas", 1)

    def serving(self, color: str) -> list[Instance]:
        return [Instance(s, r, color) for s in app_services(self.stack) for r in range(self.replicas(s))]

    def upstreams(self, instances: list[Instance]) -> list[Upstream]:
        return [Upstream(i.service, self.address(i), i.color) for i in instances]

    # -- a service's container --------------------------------------------------------------------

    def secret_values(self) -> dict[str, str]:
        """Every secret the stack names, from the allow-listed sources only (``deployments.secrets``).

        Resolved once per run, before anything on the host changes; a refusal names what to fix.
        """
        if self._secret_values is None:
            self._secret_values = stack_secrets_resolve(
                environment=self.target.environment, stack=self.stack, kind="compose"
            )
            if self.rec:
                self.rec.add_secrets(self._secret_values.values())
        return self._secret_values

    def secret_env(self, svc: dict) -> dict[str, str]:
        values = self.secret_values()
        return {var: values[ref] for var, ref in (svc.get("secrets") or {}).items()}

    def healthcheck(self, svc: dict) -> dict[str, Any] | None:
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

    def run_container(
        self, *, name: str, image: str, svc: dict, labels: dict[str, str], env: dict[str, str]
    ) -> None:
        kwargs: dict[str, Any] = dict(
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
        self.host.run(name=name, image=image, labels=labels, alias=alias, **kwargs)

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

    def plan(self, release: Release, strategy: str) -> dict[str, Any]:
        self.secret_values()  # refuses names outside the allow-list before the host is asked anything
        self.check_reachable()
        current_images: dict[str, str] = {}
        for c in self.host.containers(role="app"):
            if c.status == "running":
                current_images[c.labels.get("platform.service")] = c.labels.get("platform.image", "")
        stateful = {}
        for name in stateful_services(self.stack):
            found = self.host.containers(role="stateful", service=name)
            if not found:
                stateful[name] = "create"
            elif found[0].labels.get("platform.config-hash") != self.stateful_hash(name):
                stateful[name] = "recreate (configuration changed)"
            else:
                stateful[name] = "unchanged" if found[0].status == "running" else "start (stopped)"
        existing_volumes = self.host.volume_names()
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
            # The release proxy; the key keeps its name, plans are stored on deployments.
            "edge": "create" if not self.proxy.exists() else "switch upstreams",
        }

    # -- apply ------------------------------------------------------------------------------------

    def reconcile(self) -> None:
        for vol in self.stack.get("volumes", []):
            full = f"{self.project}_{vol}"
            if self.host.ensure_volume(full):
                self.log(f"volume {full}: created")
        for net in self.networks():
            if self.host.ensure_network(net):
                self.log(f"network {net}: created")
        for name in stateful_services(self.stack):
            svc = self.stack["services"][name]
            want = self.stateful_hash(name)
            found = self.host.containers(role="stateful", service=name)
            if found and found[0].labels.get("platform.config-hash") == want:
                if found[0].status != "running":
                    found[0].start()
                    self.log(f"{name}: started (was {found[0].status})")
                else:
                    self.log(f"{name}: unchanged")
                continue
            self.host.ensure_image(svc["image"])
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
        self.host.ensure_image(image)
        env = {
            **{k: str(v) for k, v in (svc.get("environment") or {}).items()},
            "PORT": str(self.port(inst)),
            "RELEASE_VERSION": release.version,
            "PLATFORM_COLOR": inst.color,
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

    def wait_healthy(self, instances: list[Instance], timeout: float) -> None:
        """Container health (when the stack defines a check), then an HTTP probe from the proxy."""
        deadline = time.monotonic() + timeout
        pending = list(instances)
        while pending:
            inst = pending[0]
            container = self.host.get(self.name(inst))
            state = container.attrs["State"]
            health = (state.get("Health") or {}).get("Status")
            restarts = container.attrs.get("RestartCount", 0)
            if restarts >= 2:
                raise StepFailed(
                    f"{self.name(inst)} keeps restarting ({restarts} restarts, exit code "
                    f"{state.get('ExitCode')}); last log lines:\n{self.host.logs_tail(container)}"
                )
            if state["Status"] in ("exited", "dead"):
                raise StepFailed(
                    f"{self.name(inst)} exited with code {state.get('ExitCode')}; last log lines:\n"
                    f"{self.host.logs_tail(container)}"
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
                    f"Last log lines:\n{self.host.logs_tail(container)}"
                )
            time.sleep(0.2)

    def probe(self, inst: Instance) -> tuple[bool, str]:
        path = self.stack["services"][inst.service].get("health_path", "/")
        url = f"http://{self.address(inst)}{path}"
        # timeout(1) rather than wget -T, which crashes in some busybox builds.
        code, out = self.proxy.exec(["timeout", "5", "wget", "-q", "-O", "/dev/null", url])
        return code == 0, f"GET {url} " + ("ok" if code == 0 else f"failed: {out.strip()[:200]}")

    def switch_proxy(self, serving: list[Instance]) -> None:
        self.proxy.switch(self.upstreams(serving))

    # -- strategies -------------------------------------------------------------------------------

    def current_color(self) -> str:
        return self.target.live_color or ""

    def apply(
        self,
        release: Release,
        strategy: str,
        step: Step,
        migrate: Callable[[], None],
    ) -> str:
        """Roll ``release`` out; returns the new live color. Raises StepFailed (call undo())."""
        self.secret_values()  # before anything changes: a refused secret touches nothing
        live = self.current_color()
        new = other(live) if live else "blue"
        self.old_serving = self.serving(live) if live else []
        with step("reconcile"):
            self.reconcile()
            self.proxy.ensure(self.upstreams(self.old_serving))
            for c in self.host.containers(role="app", color=new):
                self.log(f"{c.name}: removing leftover from an earlier run")
                c.remove(force=True)
        timeout = float(self.target.health_timeout_seconds)
        if strategy == "rolling":
            with step("migrate"):
                self.run_migrations(release, migrate)
            serving = list(self.old_serving)
            for inst in self.serving(new):
                label = f"{inst.service} replica {inst.replica}"
                with step(f"replace {label}"):
                    self.start_instance(inst, release)
                    self.wait_healthy([inst], timeout)
                    old = Instance(inst.service, inst.replica, live)
                    serving = [i for i in serving if i != old] + [inst]
                    self.switched = True
                    self.switch_proxy(serving)
                    self.drain_and_stop([old] if live else [])
        else:
            new_set = self.serving(new)
            with step(f"start {new}"):
                for inst in new_set:
                    self.start_instance(inst, release)
            with step("migrate"):
                self.run_migrations(release, migrate)
            with step("health"):
                self.wait_healthy(new_set, timeout)
            with step("switch edge"):
                self.switched = True
                self.switch_proxy(new_set)
            with step(f"drain and stop {live or 'previous'}"):
                self.drain_and_stop(self.old_serving)
        with step("clean up"):
            for inst in self.old_serving:
                if self.host.remove(self.name(inst)):
                    self.log(f"{self.name(inst)}: removed")
        return new

    def run_migrations(self, release: Release, migrate_locally: Callable[[], None]) -> None:
        """The release's own migrations in a one-off container of its image (stack ``migrate``).

        Without ``migrate`` in the stack, the control plane's own ``migrate_schemas`` (as on AWS).
        """
        spec = self.stack.get("migrate")
        if not spec:
            self.log("the stack names no migrate service: running the control plane's own migrations")
            migrate_locally()
            return
        service, command = spec["service"], [str(part) for part in spec["command"]]
        svc, image = self.stack["services"][service], release.images[service]
        url = oneoff.direct_database_url()
        if self.rec:
            self.rec.add_secrets([url, oneoff.database_url_password(url)])
        self.host.ensure_image(image)
        name = f"{self.project}-migrate"
        env = {
            **{k: str(v) for k, v in (svc.get("environment") or {}).items()},
            "RELEASE_VERSION": release.version,
            **self.secret_env(svc),
            "DATABASE_URL": url,  # direct, never the app's pooled one
        }
        self.host.remove(name)  # a leftover of a crashed run
        try:
            container = self.host.create(
                name=name,
                image=image,
                labels={"platform.role": "migrate", "platform.release": release.version},
                alias=name,
                command=command,
                environment=env,
                volumes=self.volumes(svc),
            )
            container.start()
        except APIError as exc:
            raise StepFailed(f"Could not start the migration container: {exc.explanation or exc}") from None
        self.log(f"{name}: {image} $ {' '.join(command)}")
        try:
            code = oneoff.stream_until_exit(
                container,
                log=self.log,
                timeout=float(settings.DEPLOY_MIGRATE_TIMEOUT_SECONDS),
                label="the migration container",
            )
        finally:
            self.host.remove(name)
        if code:
            raise StepFailed(f"Migrations failed in {image} (exit status {code}); see the lines above.")
        self.log(f"{name}: exit code 0")

    def drain_and_stop(self, old: list[Instance]) -> None:
        if not old:
            return
        self.log(f"draining {len(old)} container(s) for {self.target.drain_seconds:g} s")
        time.sleep(self.target.drain_seconds)
        for inst in old:
            if self.host.stop(self.name(inst), timeout=10):
                self.log(f"{self.name(inst)}: stopped")

    def undo(self) -> None:
        """Put the previous release back in front: restart its containers, switch back, drop ours."""
        for inst in self.old_serving:
            container = self.host.get(self.name(inst))
            if container.status != "running":
                container.start()
                self.log(f"{self.name(inst)}: restarted")
        if self.switched:
            self.wait_healthy(self.old_serving, float(self.target.health_timeout_seconds))
            self.switch_proxy(self.old_serving)
            time.sleep(self.target.drain_seconds)
        for name in self.created:
            if self.host.remove(name):
                self.log(f"{name}: removed")
