from tenants.management.base import TenantCommand
from tenants.services import tenant_change_plan


class Command(TenantCommand):
    help = "Move a shop to another plan; refused when its usage exceeds the new plan's limits."

    def add_arguments(self, parser):
        parser.add_argument("subdomain")
        parser.add_argument("plan", help="Plan slug")

    def run(self, *args, **options):
        tenant = tenant_change_plan(
            tenant=self.tenant_by_subdomain(options["subdomain"]), plan=options["plan"], actor=self.actor
        )
        self.stdout.write(f"{tenant.subdomain} is on plan {tenant.plan.slug}")
