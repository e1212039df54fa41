from django.conf import settings

from backups.pitr import config
from backups.pitr.services import pitr_setup
from core.commands import PlatformCommand


class Command(PlatformCommand):
    help = (
        "Write pgbackrest.conf from the PITR_* settings, create the stanza and check that the "
        "server's WAL reaches every repository (safe to re-run)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--print-archive-command", action="store_true", help="Only print the archive_command to set"
        )

    def run(self, *args, **options):
        if options["print_archive_command"]:
            self.stdout.write(config.archive_command())
            return
        done = pitr_setup(actor=self.actor)
        self.stdout.write(
            f"Stanza {settings.PITR_STANZA!r} ready: {done['config']}, archiving to "
            f"{'; '.join(done['repositories'])} (archive_timeout {done['archive_timeout']})."
        )
