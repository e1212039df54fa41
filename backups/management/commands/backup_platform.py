from backups.management.commands._progress import ProgressPrinter, human_bytes
from backups.models import Backup
from backups.services.runs import backup_create, backup_run
from tenants.management.base import TenantCommand


class Command(TenantCommand):
    help = "Back up the platform's public schema, or with --whole-database every schema at once."

    def add_arguments(self, parser):
        parser.add_argument("--whole-database", action="store_true", help="pg_dump of the whole database")
        parser.add_argument("--queue", action="store_true", help="Enqueue an RQ job instead of running here")

    def run(self, *args, **options):
        kind = Backup.Kind.DATABASE if options["whole_database"] else Backup.Kind.PLATFORM
        backup = backup_create(kind=kind, actor=self.actor, enqueue=options["queue"])
        if options["queue"]:
            self.stdout.write(f"{kind} backup {backup.pk} queued")
            return
        backup = backup_run(
            backup_id=backup.pk, actor=self.actor, progress=ProgressPrinter(self.stdout, 1).bytes_seen
        )
        self.stdout.write(
            f"Backed up {kind}: {backup.pk} {human_bytes(backup.size_bytes)} in "
            f"{backup.duration_seconds:.1f} s, sha256 {backup.sha256[:12]}, {backup.status}"
        )
