"""The tenant commands' base: the platform command plus a tenant lookup by subdomain."""

from django.core.management.base import CommandError

from core.commands import PlatformCommand
from tenants.models import Tenant


class TenantCommand(PlatformCommand):
    def tenant_by_subdomain(self, subdomain: str) -> Tenant:
        tenant = Tenant.objects.select_related("plan").filter(subdomain=subdomain.strip().lower()).first()
        if tenant is None:
            raise CommandError(f"No tenant with subdomain {subdomain!r} (see the admin's tenant list).")
        return tenant
