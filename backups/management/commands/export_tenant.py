from pathlib import Path

from django.core.management.base import CommandError

from backups.services.exports import export_create, tenant_export
from tenants.management.base import TenantCommand


class Command(TenantCommand):
    help = (
        "Write a portable archive of one shop's data (tar.gz of CSV tables + manifest.json) to a file "
        "here, or --queue it as a job whose archive is downloaded from the admin (Backups > Exports)."
    )

    def add_arguments(self, parser):
        parser.add_argument("subdomain")
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--output", help="Path of the .tar.gz to write")
        where.add_argument(
            "--queue", action="store_true", help="Make it in the background, into the backup store"
        )

    def run(self, *args, **options):
        tenant = self.tenant_by_subdomain(options["subdomain"])
        if options["queue"]:
            export = export_create(tenant=tenant, actor=self.actor)
            self.stdout.write(
                f"Export {export.pk} of {tenant.subdomain} queued; download it from the admin "
                "(Backups > Exports) when it is ready."
            )
            return
        path = Path(options["output"])
        if path.exists():
            raise CommandError(f"{path} already exists; choose another --output.")
        if not path.parent.is_dir():
            raise CommandError(f"Folder {path.parent} does not exist.")
        partial = path.with_name(path.name + ".partial")
        try:
            with open(partial, "wb") as out:
                summary = tenant_export(tenant=tenant, out=out, actor=self.actor)
            partial.rename(path)
        finally:
            partial.unlink(missing_ok=True)
        rows = sum(summary["tables"].values())
        self.stdout.write(
            f"Exported {tenant.subdomain}: {len(summary['tables'])} tables, {rows} rows to {path}"
        )
