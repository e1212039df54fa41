"""Shared plumbing for the deployment commands: the audit actor, errors as exit codes."""

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from deployments.errors import DeploymentError
from tenants.audit import Actor


class DeploymentCommand(BaseCommand):
    """Runs ``run()``; a DeploymentError becomes a one-line message and exit status 1."""

    def handle(self, *args, **options):
        connection.set_schema_to_public()
        try:
            self.run(*args, **options)
        except DeploymentError as exc:
            raise CommandError(str(exc)) from None

    @property
    def actor(self) -> Actor:
        return Actor.command(self.__module__.rsplit(".", 1)[-1])

    def finish(self, deployment) -> None:
        deployment.refresh_from_db()
        where = deployment.target.environment
        line = f"Deployment #{deployment.pk} of {deployment.release.version} to {where}: "
        if deployment.status == deployment.Status.SUCCEEDED:
            self.stdout.write(line + "succeeded")
            return
        raise CommandError(
            line + f"{deployment.status}: {deployment.error.splitlines()[0] if deployment.error else ''}"
        )
