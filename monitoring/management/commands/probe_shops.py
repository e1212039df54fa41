"""Probe every active shop (or one) now, store the results, print one line."""

from monitoring.services.probing import probe_run
from tenants.management.base import TenantCommand


class Command(TenantCommand):
    help = "Probe every active shop's primary host and active custom domains (or --tenant SUBDOMAIN's)."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="probe only this tenant (its subdomain)")

    def run(self, *args, **options):
        tenant = self.tenant_by_subdomain(options["tenant"]) if options["tenant"] else None
        summary = probe_run(tenant=tenant)
        down = "; ".join(f"{host}: {error}" for host, error in summary.down)
        self.stdout.write(
            f"probed {summary.total} host(s): {summary.up} up, {len(summary.down)} down"
            + (f" ({down})" if down else "")
        )
