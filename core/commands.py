"""One base for every app's management commands: errors as exit codes, the audit actor."""

from django.core.management.base import BaseCommand, CommandError

from core.audit import Actor
from core.db import connection
from core.errors import PlatformError


class PlatformCommand(BaseCommand):
    """Runs ``run()`` in the public schema; a PlatformError becomes a one-line message and exit 1."""

    def handle(self, *args, **options):
        connection.set_schema_to_public()
        try:
            self.run(*args, **options)
        except PlatformError as exc:
            raise CommandError(str(exc)) from None

    def run(self, *args, **options) -> None:
        raise NotImplementedError("a command implements run()")

    @property
    def actor(self) -> Actor:
        return Actor.command(self.__module__.rsplit(".", 1)[-1])
