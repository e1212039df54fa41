from django.core.management.base import CommandError

from backups.errors import BackupError
from backups.management.commands._progress import ProgressPrinter, human_bytes
from backups.models import Backup
from backups.services.runs import backup_create, backup_tenant_now
from tenants.management.base import TenantCommand
from tenants.models import Tenant


class Command(TenantCommand):
    help = "Back up one tenant's schema (or --all active tenants) to the backup store."

    def add_arguments(self, parser):
        parser.add_argument("subdomain", nargs="?")
        parser.add_argument("--all", action="store_true", help="Every active and suspended tenant")
        parser.add_argument("--queue", action="store_true", help="Enqueue RQ jobs instead of running here")

    def run(self, *args, **options):
        if bool(options["subdomain"]) == bool(options["all"]):
            raise CommandError("Name one tenant's subdomain, or pass --all (not both).")
        if options["all"]:
            tenants = list(Tenant.objects.filter(status__in=(Tenant.Status.ACTIVE, Tenant.Status.SUSPENDED)))
        else:
            tenants = [self.tenant_by_subdomain(options["subdomain"])]
        if options["queue"]:
            for tenant in tenants:
                backup_create(kind=Backup.Kind.TENANT, tenant=tenant, actor=self.actor)
            self.stdout.write(f"{len(tenants)} tenant(s) queued for backup (the \"backups\" queue)")
            return
        progress = ProgressPrinter(self.stdout, len(tenants))
        failures = []
        for tenant in tenants:
            try:
                backup = backup_tenant_now(
                    tenant=tenant,
                    actor=self.actor,
                    progress=progress.bytes_seen if len(tenants) == 1 else None,
                )
            except BackupError as exc:
                failures.append(f"{tenant.subdomain}: {exc}")
                progress.tenant_done(0)
                continue
            if len(tenants) > 1:
                progress.tenant_done(backup.size_bytes)
            else:
                self.stdout.write(
                    f"Backed up {tenant.subdomain}: {backup.pk} {human_bytes(backup.size_bytes)} "
                    f"in {backup.duration_seconds:.1f} s, sha256 {backup.sha256[:12]}, {backup.status}"
                )
        if failures:
            raise CommandError(f"{len(failures)} of {len(tenants)} backup(s) failed:\n" + "\n".join(failures))
        if len(tenants) > 1:
            self.stdout.write(f"Backed up {len(tenants)} tenant(s), {human_bytes(progress.bytes)}")
