"""The deployment commands' base: the platform command plus how a deployment ends."""

from django.core.management.base import CommandError

from core.commands import PlatformCommand
from deployments.models import Deployment


class DeploymentCommand(PlatformCommand):
    def finish(self, deployment: Deployment) -> None:
        deployment.refresh_from_db()
        where = deployment.target.environment
        line = f"Deployment #{deployment.pk} of {deployment.release.version} to {where}: "
        if deployment.status == deployment.Status.SUCCEEDED:
            self.stdout.write(line + "succeeded")
            return
        raise CommandError(
            line + f"{deployment.status}: {deployment.error.splitlines()[0] if deployment.error else ''}"
        )
