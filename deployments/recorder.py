"""The live step log of a deployment: one row per step, one row per log line, with timestamps.

Every line written also extends the target's deploy lock, so a lock only expires when the worker
holding it has stopped writing (crashed or hung).
"""

import contextlib
from collections.abc import Iterable, Iterator
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from deployments.models import Deployment, DeploymentLogLine, DeploymentStep, Target


class Recorder:
    def __init__(self, deployment: Deployment, secrets: tuple[str, ...] = ()) -> None:
        self.deployment = deployment
        self.step_row: DeploymentStep | None = None
        self._secrets = tuple(s for s in secrets if s)

    def add_secrets(self, values: Iterable[str]) -> None:
        self._secrets += tuple(v for v in values if v)

    def scrub(self, text: str) -> str:
        for value in self._secrets:
            text = text.replace(value, "***")
        return text

    def heartbeat(self) -> None:
        Target.objects.filter(pk=self.deployment.target_id, lock_deployment=self.deployment).update(
            lock_expires_at=timezone.now() + timedelta(seconds=settings.DEPLOY_LOCK_SECONDS)
        )

    def log(self, text: str) -> None:
        step = self.step_row or self._open("deployment")
        DeploymentLogLine.objects.create(step=step, text=self.scrub(str(text))[:4000])
        self.heartbeat()

    def _open(self, name: str) -> DeploymentStep:
        self.step_row = DeploymentStep.objects.create(deployment=self.deployment, name=name)
        return self.step_row

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[DeploymentStep]:
        outer = self.step_row
        row = self._open(name)
        self.heartbeat()
        try:
            yield row
        except BaseException as exc:
            DeploymentLogLine.objects.create(step=row, text=self.scrub(f"FAILED: {exc}")[:4000])
            row.status = DeploymentStep.Status.FAILED
            raise
        else:
            row.status = DeploymentStep.Status.SUCCEEDED
        finally:
            row.finished_at = timezone.now()
            row.save(update_fields=["status", "finished_at"])
            self.step_row = outer
