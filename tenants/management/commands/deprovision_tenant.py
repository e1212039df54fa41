from django.core.management.base import CommandError

from tenants.management.base import TenantCommand
from tenants.selectors import tenant_live_usage
from tenants.services import tenant_deprovision


class Command(TenantCommand):
    help = "Delete a shop: its routes go at once; its schema is dropped unless --keep-schema."

    def add_arguments(self, parser):
        parser.add_argument("subdomain")
        parser.add_argument(
            "--keep-schema", action="store_true", help="Leave the schema and its data in place"
        )
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation")

    def run(self, *args, **options):
        tenant = self.tenant_by_subdomain(options["subdomain"])
        drop = not options["keep_schema"]
        if drop:
            usage = tenant_live_usage(tenant=tenant)
            loss = (
                f"This DROPS schema {tenant.schema_name!r} with {usage.products} products and all "
                f"other data of {tenant.name!r}. It cannot be undone."
            )
        else:
            loss = f"Schema {tenant.schema_name!r} is kept; only the shop's routes are removed."
        self.stdout.write(loss)
        if not options["yes"]:
            if not options.get("interactive", True):
                raise CommandError("Refusing to deprovision without --yes in non-interactive mode.")
            answer = input(f"Type the subdomain ({tenant.subdomain}) to confirm: ")
            if answer.strip() != tenant.subdomain:
                raise CommandError("Confirmation did not match; nothing was changed.")
        tenant = tenant_deprovision(tenant=tenant, drop_schema=drop, actor=self.actor)
        self.stdout.write(f"Deprovisioned {tenant.subdomain} ({tenant.status_reason})")
