"""Shared plumbing for the tenant commands: lookups, the audit actor, errors as exit codes."""

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from tenants.audit import Actor
from tenants.errors import TenantError
from tenants.models import Tenant


class TenantCommand(BaseCommand):
    """Runs ``run()``; a TenantError becomes a one-line message and exit status 1."""

    def handle(self, *args, **options):
        connection.set_schema_to_public()
        try:
            self.run(*args, **options)
        except TenantError as exc:
            raise CommandError(str(exc)) from None

    @property
    def actor(self) -> Actor:
        return Actor.command(self.__module__.rsplit(".", 1)[-1])

    def tenant_by_subdomain(self, subdomain: str) -> Tenant:
        tenant = Tenant.objects.select_related("plan").filter(subdomain=subdomain.strip().lower()).first()
        if tenant is None:
            raise CommandError(f"No tenant with subdomain {subdomain!r} (see the admin's tenant list).")
        return tenant
