from backups.pitr.services import pitr_backup_run, pitr_status_refresh
from core.commands import PlatformCommand


class Command(PlatformCommand):
    help = "Take a pgBackRest backup of the cluster now, into every repository (full, diff, incr or auto)."

    def add_arguments(self, parser):
        parser.add_argument("--type", default="auto", choices=["auto", "full", "diff", "incr"])
        parser.add_argument("--repo", type=int, help="Only this repository (1, or 2: the second region)")

    def run(self, *args, **options):
        done = pitr_backup_run(backup_type=options["type"], actor=self.actor, repo=options["repo"])
        pitr_status_refresh()
        for row in done:
            self.stdout.write(
                f"{row.type} backup {row.label} in repo{row.repo}: {row.size_bytes} bytes "
                f"({row.repo_size_bytes} stored) in {row.duration_seconds:.1f} s"
            )
