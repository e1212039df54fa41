from django.conf import settings

from tenants.management.base import TenantCommand
from tenants.schema_pool import pool_fill


class Command(TenantCommand):
    help = "Top up the pool of spare, migrated schemas that makes provisioning instant."

    def add_arguments(self, parser):
        parser.add_argument("--size", type=int, default=settings.TENANT_SCHEMA_POOL_SIZE)

    def run(self, *args, **options):
        built = pool_fill(size=options["size"])
        self.stdout.write(f"Built {built} spare schema(s); pool target is {options['size']}.")
