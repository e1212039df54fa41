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
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--backup", help="Backup id (see list_backups)")
        source.add_argument(
            "--to-time", metavar="MOMENT", help='The shop as it was then, e.g. "2026-12-04 14:03:00+00"'
        )
        parser.add_argument(
            "--as-new", metavar="SUBDOMAIN", help="Restore as a new tenant with this subdomain"
        )
        parser.add_argument("--confirm", help="The tenant's subdomain, typed to confirm an in-place restore")

    def run(self, *args, **options):
        tenant = self.tenant_by_subdomain(options["subdomain"])
        if options["to_time"]:
            return self._to_time(tenant, options)
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

    def _to_time(self, tenant, options) -> None:
        from backups.pitr.restore import tenant_restore_to_time, tenant_restore_to_time_as_new
        from backups.pitr.services import moment_parse

        moment = moment_parse(options["to_time"])
        if options["as_new"]:
            restore = tenant_restore_to_time_as_new(
                tenant=tenant, to_time=moment, subdomain=options["as_new"], actor=self.actor
            )
            self.stdout.write(
                f"Restored {tenant.subdomain} as it was at {moment.isoformat()} as new tenant "
                f"{restore.target_subdomain} in {restore.duration_seconds:.1f} s"
            )
            return
        confirm = self._confirm(tenant, options, f"its state at {moment.isoformat()}")
        restore = tenant_restore_to_time(tenant=tenant, to_time=moment, confirm=confirm, actor=self.actor)
        self.stdout.write(
            f"Restored {tenant.subdomain} to {moment.isoformat()} in {restore.duration_seconds:.1f} s "
            f"(safety backup {restore.safety_backup_id})"
        )

    def _confirm(self, tenant, options, what: str) -> str:
        confirm = options["confirm"]
        if confirm is None:
            if not options.get("interactive", sys.stdin.isatty()):
                raise CommandError("An in-place restore needs --confirm <subdomain> in non-interactive mode.")
            self.stdout.write(
                f"This REPLACES all data of {tenant.name!r} ({tenant.schema_name}) with {what}. "
                "A safety backup is taken first."
            )
            confirm = input(f"Type the subdomain ({tenant.subdomain}) to confirm: ")
        return confirm
