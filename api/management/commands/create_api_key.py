"""Make a staff API key from the command line: CI bootstrap, a new install, the demo.

    manage.py create_api_key --name ci [--scopes deployments:read,deployments:write]
                             [--expires-days 90] [--token-file PATH [--keep-existing]]

The token is printed once, or written to --token-file (mode 0600) and not printed. With
--keep-existing, a file that already holds a usable key is left as it is (re-runnable set-up).
"""

from datetime import timedelta
from pathlib import Path

from django.core.management.base import CommandError
from django.utils import timezone

from api.models import DEFAULT_SCOPES
from api.services import apikey_authenticate, apikey_create
from core.commands import PlatformCommand


class Command(PlatformCommand):
    help = "Make a staff API key (shown once, or written to a file only its owner can read)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True,
                            help="What uses the key (shown in lists and the audit log)")
        parser.add_argument("--scopes", default=",".join(DEFAULT_SCOPES),
                            help="Comma-separated scopes (default: every scope but backups:restore)")
        parser.add_argument("--expires-days", type=int,
                            help="Days until the key stops working (default: never)")
        parser.add_argument("--token-file", help="Write the token here (mode 0600) instead of printing it")
        parser.add_argument("--keep-existing", action="store_true",
                            help="With --token-file: keep a usable key already in the file")

    def run(self, *args, **options):
        path = Path(options["token_file"]) if options["token_file"] else None
        if options["keep_existing"]:
            if path is None:
                raise CommandError("--keep-existing needs --token-file (the key to keep).")
            if path.exists() and apikey_authenticate(path.read_text().strip()) is not None:
                self.stdout.write(f"Kept the usable key in {path}.")
                return
        days = options["expires_days"]
        if days is not None and days < 1:
            raise CommandError(f"--expires-days must be 1 or more (got {days}); leave it out for no expiry.")
        new = apikey_create(
            name=options["name"],
            scopes=[s.strip() for s in options["scopes"].split(",") if s.strip()],
            actor=self.actor,
            expires_at=timezone.now() + timedelta(days=days) if days else None,
        )
        if path is None:
            self.stdout.write(new.token)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new.token + "\n")
        path.chmod(0o600)
        self.stdout.write(f"Made API key {new.key.prefix} ({', '.join(new.key.scopes)}); token in {path}.")
