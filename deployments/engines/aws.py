"""AWS target: ECS services (Fargate) behind an ELBv2 listener, driven with boto3.

- rolling: register a task definition revision per app service, run the migration phase, update
  each ECS service and wait until it is stable; on failure every updated service gets its previous
  task definition back.
- blue-green: ``ecs_services`` names a blue and a green ECS service per app service, each behind
  its own target group (``target_groups``: ``{service: {"blue": arn, "green": arn}}``, or one flat
  pair when the stack has one app service). The listener reaches each app service through its
  default action or a rule (say ``/api/*`` for the backend) forwarding to one of that service's two
  groups, all on the same colour. The idle services get the new revisions and the live ones' task
  counts, must become stable with healthy targets; then every forward to a live group is shifted to
  its idle twin and, after the drain time, the old services are scaled to zero. On failure the
  listener's actions and the idle services are put back as they were.

Secrets go into task definitions as references (``valueFrom``: SSM parameter ``/<project>/<NAME>``),
never as values. Names held in the environment's secret store are written to those parameters
(SecureString) in the first step; other names must already exist in SSM (``deployments/secrets.py``).
"""

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from deployments.aws_client import aws_client
from deployments.engines import Step
from deployments.engines.aws_listener import AwsListenerMixin
from deployments.errors import DeploymentValidationError, StepFailed, TargetUnreachable
from deployments.models import Release, Target
from deployments.recorder import Recorder
from deployments.secrets import stack_secrets_resolve
from deployments.stack import app_services
from deployments.stack_model import duration_seconds


class AwsEngine(AwsListenerMixin):
    def __init__(self, target: Target, recorder: Recorder | None = None) -> None:
        self.target = target
        self.stack = target.stack
        self.project = target.project or target.name
        self.rec = recorder
        self.region = target.aws_region
        # What this run changed, for undo(): service name -> (task definition, desired count) before.
        self.previous: dict[str, tuple[str, int]] = {}
        self.listener_before: dict[str | None, list[dict]] = {}  # rule ARN (None: default) -> actions
        self._store_values: dict[str, str] | None = None

    def client(self, service: str) -> Any:
        return aws_client(service, region=self.region)

    def log(self, text: str) -> None:
        if self.rec:
            self.rec.log(text)

    @property
    def touched(self) -> bool:
        """Whether apply() updated a service or the listener, which undo() puts back."""
        return bool(self.previous or self.listener_before)

    # -- reading ----------------------------------------------------------------------------------

    def check_reachable(self) -> str:
        try:
            found = self.client("ecs").describe_clusters(clusters=[self.target.ecs_cluster])["clusters"]
        except (BotoCoreError, ClientError) as exc:
            raise TargetUnreachable(
                f"Cannot reach ECS in {self.region}: {exc}. Check the worker's AWS credentials (environment "
                "or instance role) and network access."
            ) from None
        if not found or found[0].get("status") != "ACTIVE":
            raise TargetUnreachable(
                f"ECS cluster {self.target.ecs_cluster!r} does not exist or is not active in {self.region}."
            )
        return f"ECS cluster {found[0]['clusterArn']} ({found[0].get('runningTasksCount', 0)} tasks running)"

    def service(self, name: str) -> dict:
        found = self.client("ecs").describe_services(cluster=self.target.ecs_cluster, services=[name])
        services = [s for s in found["services"] if s.get("status") == "ACTIVE"]
        if not services:
            raise DeploymentValidationError(
                f"ECS service {name!r} does not exist in cluster {self.target.ecs_cluster!r}; create it "
                "(with its load balancer) first, then deploy."
            )
        return services[0]

    def task_definition(self, arn: str) -> dict:
        return self.client("ecs").describe_task_definition(taskDefinition=arn)["taskDefinition"]

    def role_arn(self, name: str) -> str | None:
        if not name:
            return None
        try:
            return self.client("iam").get_role(RoleName=name)["Role"]["Arn"]
        except ClientError:
            raise DeploymentValidationError(
                f"IAM role {name!r} does not exist; create it or fix the name."
            ) from None

    def secret_ref(self, name: str) -> str:
        return f"/{self.project}/{name}"

    def store_values(self) -> dict[str, str]:
        """The stack's secrets held in the environment's store (name -> value); refusals raise."""
        if self._store_values is None:
            self._store_values = stack_secrets_resolve(
                environment=self.target.environment, stack=self.stack, kind="aws"
            )
            if self.rec:
                self.rec.add_secrets(self._store_values.values())
        return self._store_values

    def write_store_secrets(self) -> None:
        ssm = self.client("ssm")
        for name, value in sorted(self.store_values().items()):
            ssm.put_parameter(Name=self.secret_ref(name), Value=value, Type="SecureString", Overwrite=True)
            self.log(f"secret {name}: written to SSM parameter {self.secret_ref(name)} from the secret store")

    def missing_secrets(self) -> list[str]:
        stored = self.store_values()
        wanted = sorted(
            {
                self.secret_ref(ref)
                for s in app_services(self.stack)
                for ref in (self.stack["services"][s].get("secrets") or {}).values()
                if ref not in stored
            }
        )
        if not wanted:
            return []
        found = set()
        paginator = self.client("ssm").get_paginator("describe_parameters")
        for page in paginator.paginate(ParameterFilters=[{"Key": "Name", "Values": wanted}]):
            found |= {p["Name"] for p in page["Parameters"]}
        return [w for w in wanted if w not in found]

    # -- desired state ----------------------------------------------------------------------------

    def container_definition(self, service: str, release: Release) -> dict:
        svc = self.stack["services"][service]
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        env.update(PORT=str(svc["port"]), RELEASE_VERSION=release.version)
        container = {
            "name": service,
            "image": release.images[service],
            "essential": True,
            # The whole task's share; valid on Fargate and what moto needs to place the task.
            "cpu": int(svc.get("cpu", 256)),
            "memory": int(svc.get("memory", 512)),
            "portMappings": [{"containerPort": svc["port"], "protocol": "tcp"}],
            "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
            "secrets": [
                {"name": k, "valueFrom": self.secret_ref(ref)}
                for k, ref in sorted((svc.get("secrets") or {}).items())
            ],
        }
        if svc.get("command"):
            container["command"] = [str(p).replace("$$", "$") for p in svc["command"]]
        check = svc.get("healthcheck")
        if check:
            container["healthCheck"] = {
                "command": [p.replace("$$", "$") for p in check["test"]],
                "interval": int(duration_seconds(check.get("interval", "30s"))),
                "timeout": int(duration_seconds(check.get("timeout", "5s"))),
                "retries": int(check.get("retries", 3)),
                "startPeriod": int(duration_seconds(check.get("start_period", "0s"))),
            }
        return container

    @staticmethod
    def _comparable(container: dict) -> dict:
        keys = ("image", "environment", "secrets", "command", "healthCheck", "portMappings")
        out = {k: container.get(k) for k in keys}
        out["environment"] = sorted((e["name"], e["value"]) for e in container.get("environment") or [])
        out["secrets"] = sorted((e["name"], e["valueFrom"]) for e in container.get("secrets") or [])
        out["portMappings"] = [
            (p.get("containerPort"), p.get("protocol", "tcp")) for p in container.get("portMappings") or []
        ]
        return out

    def service_names(self, service: str, strategy: str) -> dict[str, str]:
        names = (self.target.ecs_services or {}).get(service)
        if strategy == "blue-green":
            if not isinstance(names, dict) or set(names) != {"blue", "green"}:
                raise DeploymentValidationError(
                    f'Blue-green on AWS needs ecs_services.{service} = {{"blue": ..., "green": ...}} (two '
                    "ECS services, one per target group); use --strategy rolling for a single service."
                )
            return names
        if isinstance(names, dict):
            raise DeploymentValidationError(
                f"ecs_services.{service} names a blue and a green service; "
                "deploy it with --strategy blue-green."
            )
        if not isinstance(names, str):
            raise DeploymentValidationError(f"ecs_services.{service} must be the name of an ECS service.")
        return {"live": names}

    # -- plan -------------------------------------------------------------------------------------

    def plan(self, release: Release, strategy: str) -> dict[str, Any]:
        self.store_values()  # refused names first, before AWS is asked anything
        self.check_reachable()
        apps = app_services(self.stack)
        live = idle = None
        if strategy == "blue-green":
            if not self.target.listener_arn:
                raise DeploymentValidationError("Blue-green on AWS needs the listener_arn it shifts.")
            live = self.live_color()
            idle = "green" if live == "blue" else "blue"
        missing = self.missing_secrets()
        if missing:
            raise DeploymentValidationError(
                f"Missing SSM parameters {', '.join(missing)}; create them (SecureString) before deploying."
            )
        for role in (self.target.execution_role_name, self.target.task_role_name):
            self.role_arn(role)
        services = {}
        listener = None
        if strategy == "blue-green":
            assert idle is not None  # set above for blue-green
            listener = {
                "from": live,
                "to": idle,
                "target_groups": {name: self.service_groups(name)[idle] for name in apps},
            }
        for name in apps:
            names = self.service_names(name, strategy)
            if strategy == "blue-green":
                assert live is not None and idle is not None  # set above for blue-green
                current = self.service(names[live])
                ecs_name = names[idle]
            else:
                current = self.service(names["live"])
                ecs_name = names["live"]
            old = self._comparable(self.task_definition(current["taskDefinition"])["containerDefinitions"][0])
            new = self._comparable(self.container_definition(name, release))
            services[name] = {
                "ecs_service": ecs_name,
                "current_task_definition": current["taskDefinition"],
                "desired_count": current["desiredCount"],
                "changes": {k: {"from": old[k], "to": new[k]} for k in new if old.get(k) != new[k]},
            }
        return {
            "target": self.target.name,
            "kind": "aws",
            "cluster": self.target.ecs_cluster,
            "strategy": strategy,
            "services": services,
            "listener": listener,
            "migration": self.stack.get("migrate") or "control plane migrate_schemas",
            # Names only: these SSM parameters are (over)written from the environment's secret store.
            "store_secrets": sorted(self.secret_ref(name) for name in self.store_values()),
        }

    # -- apply ------------------------------------------------------------------------------------

    def register(self, service: str, release: Release) -> str:
        svc = self.stack["services"][service]
        kwargs = dict(
            family=f"{self.project}-{service}",
            containerDefinitions=[self.container_definition(service, release)],
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu=str(svc.get("cpu", 256)),
            memory=str(svc.get("memory", 512)),
            tags=[{"key": "platform-release", "value": release.version}],
        )
        execution, task = (
            self.role_arn(self.target.execution_role_name),
            self.role_arn(self.target.task_role_name),
        )
        if execution:
            kwargs["executionRoleArn"] = execution
        if task:
            kwargs["taskRoleArn"] = task
        arn = self.client("ecs").register_task_definition(**kwargs)["taskDefinition"]["taskDefinitionArn"]
        self.log(f"{service}: registered {arn}")
        return arn

    def network(self) -> dict[str, Any]:
        return {
            "awsvpcConfiguration": {
                "subnets": list(self.target.subnets),
                "securityGroups": list(self.target.security_groups),
                "assignPublicIp": "DISABLED",
            }
        }

    def migrate_task(self, task_definitions: dict[str, str], migrate_locally: Callable[[], None]) -> None:
        spec = self.stack.get("migrate")
        if not spec:
            migrate_locally()
            return
        service, command = spec["service"], spec["command"]
        ecs = self.client("ecs")
        started = ecs.run_task(
            cluster=self.target.ecs_cluster,
            taskDefinition=task_definitions[service],
            launchType="FARGATE",
            networkConfiguration=self.network(),
            startedBy="platform-deploy",
            overrides={"containerOverrides": [{"name": service, "command": command}]},
        )
        if started.get("failures") or not started.get("tasks"):
            raise StepFailed(f"The migration task did not start: {started.get('failures')}")
        arn = started["tasks"][0]["taskArn"]
        self.log(f"migration task {arn} started: {' '.join(command)}")
        deadline = time.monotonic() + settings.DEPLOY_AWS_WAIT_SECONDS
        last = None
        while True:
            task = ecs.describe_tasks(cluster=self.target.ecs_cluster, tasks=[arn])["tasks"][0]
            if task["lastStatus"] != last:
                last = task["lastStatus"]
                self.log(f"migration task: {last}")
            if last == "STOPPED":
                break
            if time.monotonic() > deadline:
                ecs.stop_task(cluster=self.target.ecs_cluster, task=arn, reason="deploy timed out")
                raise StepFailed(
                    f"The migration task did not finish within {settings.DEPLOY_AWS_WAIT_SECONDS} s."
                )
            time.sleep(0.2)
        codes = [c.get("exitCode") for c in task.get("containers", [])]
        if codes != [0] * len(codes) or not codes:
            raise StepFailed(
                f"The migration task failed: exit codes {codes}, {task.get('stoppedReason', '')}."
            )
        self.log("migration task: exit code 0")

    def update_service(self, name: str, task_definition: str, desired: int | None = None) -> None:
        current = self.service(name)
        self.previous.setdefault(name, (current["taskDefinition"], current["desiredCount"]))
        kwargs: dict[str, str | int] = {
            "cluster": self.target.ecs_cluster, "service": name, "taskDefinition": task_definition
        }
        if desired is not None:
            kwargs["desiredCount"] = desired
        self.client("ecs").update_service(**kwargs)
        self.log(
            f"{name}: now {task_definition.rsplit('/', 1)[-1]}"
            + (f", {desired} task(s)" if desired is not None else "")
        )

    def wait_stable(self, name: str) -> None:
        deadline = time.monotonic() + settings.DEPLOY_AWS_WAIT_SECONDS
        while True:
            svc = self.service(name)
            primary = [d for d in svc.get("deployments", []) if d.get("status") == "PRIMARY"]
            if (
                len(svc.get("deployments", [])) <= 1
                and svc["runningCount"] == svc["desiredCount"]
                and (not primary or primary[0].get("rolloutState", "COMPLETED") == "COMPLETED")
            ):
                self.log(f"{name}: stable ({svc['runningCount']}/{svc['desiredCount']} running)")
                return
            if time.monotonic() > deadline:
                raise StepFailed(
                    f"ECS service {name} did not become stable within {settings.DEPLOY_AWS_WAIT_SECONDS} s "
                    f"({svc['runningCount']} of {svc['desiredCount']} tasks running, "
                    f"{len(svc.get('deployments', []))} deployments); see its events in the ECS console."
                )
            time.sleep(0.5)

    def apply(self, release: Release, strategy: str, step: Step, migrate: Callable[[], None]) -> str:
        apps = app_services(self.stack)
        self.store_values()  # refused names stop the deploy before anything changes
        if self._store_values:
            with step("secrets"):
                self.write_store_secrets()
        with step("register task definitions"):
            task_definitions = {name: self.register(name, release) for name in apps}
        with step("migrate"):
            self.migrate_task(task_definitions, migrate)
        if strategy == "blue-green":
            live = self.live_color()
            idle = "green" if live == "blue" else "blue"
            names = {service: self.service_names(service, strategy) for service in apps}
            with step(f"start {idle}"):
                for service in apps:
                    desired = max(self.service(names[service][live])["desiredCount"], 1)
                    self.update_service(names[service][idle], task_definitions[service], desired)
                for service in apps:
                    self.wait_stable(names[service][idle])
            with step("health"):
                for service in apps:
                    self.wait_targets_healthy(service, idle)
            with step("shift listener"):
                self.shift_listener(live, idle)
            with step(f"drain and stop {live}"):
                time.sleep(self.target.drain_seconds)
                for service in apps:
                    self.client("ecs").update_service(
                        cluster=self.target.ecs_cluster, service=names[service][live], desiredCount=0
                    )
                    self.log(f"{names[service][live]}: scaled to 0")
            return idle
        for service in apps:
            name = self.service_names(service, strategy)["live"]
            with step(f"update {service}"):
                self.update_service(name, task_definitions[service])
                self.wait_stable(name)
        return ""

    def undo(self) -> None:
        self.restore_listener()
        for name, (task_definition, desired) in self.previous.items():
            self.client("ecs").update_service(
                cluster=self.target.ecs_cluster,
                service=name,
                taskDefinition=task_definition,
                desiredCount=desired,
            )
            self.log(f"{name}: back to {task_definition.rsplit('/', 1)[-1]}, {desired} task(s)")
