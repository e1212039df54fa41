import json

from backups.pitr import config
from backups.pitr.selectors import archive_state, recoverable_window
from backups.pitr.services import pitr_status_refresh
from core.commands import PlatformCommand
from core.errors import PlatformError


class Command(PlatformCommand):
    help = "The continuous archive now: recoverable window, archive age (the RPO now), repositories."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="One JSON object")
        parser.add_argument(
            "--no-refresh", action="store_true", help="Do not ask pgBackRest (server view only)"
        )

    def run(self, *args, **options):
        if not config.enabled():
            raise PlatformError("The continuous archive is off: PITR_STANZA is empty (docs/backups.md).")
        repos = [] if options["no_refresh"] else pitr_status_refresh().repos
        state = archive_state()
        window = recoverable_window(state)
        out = {
            "window_start": window.start and window.start.isoformat(),
            "window_end": window.end and window.end.isoformat(),
            "archive_age_seconds": state.age_seconds,
            "last_archived_wal": state.last_archived_wal,
            "failing": state.failing,
            "repositories": repos,
        }
        if options["json"]:
            self.stdout.write(json.dumps(out))
            return
        age = "never archived" if state.age_seconds is None else f"{state.age_seconds:.1f} s"
        self.stdout.write(
            f"Recoverable from {out['window_start'] or '(no backup yet)'} "
            f"to {out['window_end'] or '(nothing archived)'}; "
            f"archive age {age}{' (FAILING)' if state.failing else ''}; "
            + "; ".join(f"repo{r['repo']} {r['status']} WAL {r['wal_min']}..{r['wal_max']}" for r in repos)
        )
