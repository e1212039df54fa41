from tenants.management.base import TenantCommand
from tenants.services import tenant_suspend


class Command(TenantCommand):
    help = "Take a shop offline (it answers 503) until resumed."

    def add_arguments(self, parser):
        parser.add_argument("subdomain")
        parser.add_argument("--reason", required=True)

    def run(self, *args, **options):
        tenant = tenant_suspend(
            tenant=self.tenant_by_subdomain(options["subdomain"]), reason=options["reason"], actor=self.actor
        )
        self.stdout.write(f"Suspended {tenant.subdomain}: {tenant.status_reason}")
