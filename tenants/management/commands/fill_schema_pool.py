from django.conf import settings
from django.core.management.base import CommandError

from tenants.management.base import TenantCommand
from tenants.schema_pool import pool_fill


class Command(TenantCommand):
    help = "Top up the pool of spare, migrated schemas that makes provisioning instant."

    def add_arguments(self, parser):
        parser.add_argument("--size", type=int, default=settings.TENANT_SCHEMA_POOL_SIZE)
        parser.add_argument("--batch", type=int, default=settings.TENANT_SCHEMA_POOL_REFILL_BATCH,
                            help="spares built per transaction (when they are built by replay)")

    def run(self, *args, **options):
        if options["size"] < 0:
            raise CommandError(f"--size must be 0 or more (got {options['size']}).")
        if options["batch"] < 1:
            raise CommandError(f"--batch must be at least 1 (got {options['batch']}).")
        built = pool_fill(size=options["size"], batch=options["batch"])
        self.stdout.write(f"Built {built} spare schema(s); pool target is {options['size']}.")
