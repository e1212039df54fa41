from tenants.jobs import provision_tenant_job
from tenants.management.base import TenantCommand
from tenants.services import platform_host_for, tenant_provision, tenant_request, tenant_url


class Command(TenantCommand):
    help = "Create a shop: schema, platform subdomain and owner account, in one step."

    def add_arguments(self, parser):
        parser.add_argument("subdomain", help="3-63 characters: a-z, 0-9 and hyphens")
        parser.add_argument("--name", required=True, help='Shop name, e.g. "Acme Shoes"')
        parser.add_argument("--plan", required=True, help="Plan slug, e.g. starter")
        parser.add_argument("--owner-email", required=True)
        parser.add_argument(
            "--async", dest="run_async", action="store_true", help="Queue the work on the RQ worker"
        )

    def run(self, *args, **options):
        fields = dict(
            subdomain=options["subdomain"],
            name=options["name"],
            plan=options["plan"],
            owner_email=options["owner_email"],
            actor=self.actor,
        )
        if options["run_async"]:
            tenant = tenant_request(**fields)
            job = provision_tenant_job.delay(str(tenant.pk), *self.actor.job_args)
            self.stdout.write(f"Queued provisioning of {tenant.subdomain} as job {job.id}.")
            return
        result = tenant_provision(**fields)
        tenant = result.tenant
        host = platform_host_for(tenant.subdomain)
        if result.owner_link is None:
            self.stdout.write(f"{tenant.subdomain} is already active at {tenant_url(host)}")
            return
        self.stdout.write(
            self.style.SUCCESS(f"Provisioned {tenant.subdomain} ({tenant.schema_name}) at {tenant_url(host)}")
        )
        self.stdout.write(f"Owner {tenant.owner_email} sets a password once at: {result.owner_link}")
