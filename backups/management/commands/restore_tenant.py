import sys

from django.core.management.base import CommandError

from backups.selectors import backup_get
from backups.services.restore import backup_restore_as_new, backup_restore_in_place
from tenants.management.base import TenantCommand


class Command(TenantCommand):
    stealth_options = ("interactive",)
    help = (
        "Restore a tenant from one of its backups in place (after a safety backup), or copy a "
        "backup into a new tenant with --as-new."
    )

    def add_arguments(self, parser):
        parser.add_argument("subdomain")
        parser.add_argument("--backup", required=True, help="Backup id (see list_backups)")
        parser.add_argument(
            "--as-new", metavar="SUBDOMAIN", help="Restore as a new tenant with this subdomain"
        )
        parser.add_argument("--confirm", help="The tenant's subdomain, typed to confirm an in-place restore")

    def run(self, *args, **options):
        tenant = self.tenant_by_subdomain(options["subdomain"])
        if options["as_new"]:
            backup = backup_get(options["backup"])
            if backup.tenant_id != tenant.pk:
                raise CommandError(
                    f"Backup {backup.pk} belongs to {backup.tenant_label!r}, not {tenant.subdomain!r}."
                )
            restore = backup_restore_as_new(
                backup_id=backup.pk, subdomain=options["as_new"], actor=self.actor
            )
            self.stdout.write(
                f"Restored backup {backup.pk} as new tenant {restore.target_subdomain} "
                f"in {restore.duration_seconds:.1f} s"
            )
            return
        confirm = options["confirm"]
        if confirm is None:
            if not options.get("interactive", sys.stdin.isatty()):
                raise CommandError("An in-place restore needs --confirm <subdomain> in non-interactive mode.")
            self.stdout.write(
                f"This REPLACES all data of {tenant.name!r} ({tenant.schema_name}) with backup "
                f"{options['backup']}. A safety backup is taken first."
            )
            confirm = input(f"Type the subdomain ({tenant.subdomain}) to confirm: ")
        restore = backup_restore_in_place(
            tenant=tenant, backup_id=options["backup"], confirm=confirm, actor=self.actor
        )
        self.stdout.write(
            f"Restored {tenant.subdomain} from backup {restore.backup_id} "
            f"in {restore.duration_seconds:.1f} s (safety backup {restore.safety_backup_id})"
        )
