from pathlib import Path

from django.core.management.base import CommandError

from core.commands import PlatformCommand
from core.security_doc import security_doc_path, security_doc_render


class Command(PlatformCommand):
    help = "Write the Roles section of docs/security.md from core/access.py and core/roles.py."

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="Exit 1 if the file is out of date.")
        parser.add_argument(
            "--path", type=Path, default=None, help="Another file (default: docs/security.md)."
        )

    def run(self, *args, **options):
        path = options["path"] or security_doc_path()
        try:
            current = path.read_text()
            wanted = security_doc_render(current)
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        if current == wanted:
            self.stdout.write(f"{path.name} is up to date.")
            return
        if options["check"]:
            raise CommandError(f"{path.name} is out of date: run `manage.py security_doc`.")
        path.write_text(wanted)
        self.stdout.write(f"{path.name}: roles section written.")
