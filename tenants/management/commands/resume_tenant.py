from tenants.management.base import TenantCommand
from tenants.services import tenant_resume


class Command(TenantCommand):
    help = "Bring a suspended shop back online."

    def add_arguments(self, parser):
        parser.add_argument("subdomain")

    def run(self, *args, **options):
        tenant = tenant_resume(tenant=self.tenant_by_subdomain(options["subdomain"]), actor=self.actor)
        self.stdout.write(f"Resumed {tenant.subdomain}")
