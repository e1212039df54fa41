from pathlib import Path

from django.core.management.base import CommandError

from backups.services import tenant_export
from tenants.management.base import TenantCommand


class Command(TenantCommand):
    help = "Write a portable archive of one shop's data (tar.gz of CSV tables + manifest.json)."

    def add_arguments(self, parser):
        parser.add_argument("subdomain")
        parser.add_argument("--output", required=True, help="Path of the .tar.gz to write")

    def run(self, *args, **options):
        tenant = self.tenant_by_subdomain(options["subdomain"])
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
