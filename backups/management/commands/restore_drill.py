from django.conf import settings
from django.core.management.base import CommandError

from backups.services.drills import drill_candidates, drill_run
from tenants.management.base import TenantCommand


class Command(TenantCommand):
    help = "Restore a sample of recent backups into scratch databases and check them (a DR drill)."

    def add_arguments(self, parser):
        parser.add_argument("--sample", type=int, default=settings.BACKUP_DRILL_SAMPLE)

    def run(self, *args, **options):
        if options["sample"] < 1:
            raise CommandError("--sample must be at least 1.")
        backups = drill_candidates(sample=options["sample"])
        if not backups:
            raise CommandError("No verified backups to drill; take some first (backup_tenant --all).")
        failed = 0
        for n, backup in enumerate(backups, 1):
            drill = drill_run(backup=backup, actor=self.actor)
            rto = f"RTO {drill.rto_seconds:.2f} s" if drill.rto_seconds is not None else "no restore"
            self.stdout.write(
                f"[{n}/{len(backups)}] {'PASS' if drill.passed else 'FAIL'} {backup} {rto}"
                + (f": {drill.reason}" if not drill.passed else "")
            )
            failed += not drill.passed
        if failed:
            raise CommandError(
                f"{failed} of {len(backups)} drill(s) failed; see the drill history in the admin."
            )
        self.stdout.write(f"{len(backups)} drill(s) passed")
