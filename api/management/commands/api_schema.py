from pathlib import Path

from api.errors import ApiError
from api.openapi import REGENERATE, documents, render
from core.commands import PlatformCommand


class Command(PlatformCommand):
    help = "Write the API's OpenAPI documents (docs/openapi.json, docs/openapi-shop.json) from the code."

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="only say whether the files are current")
        parser.add_argument("--dir", type=Path, help="the files in this folder (default: docs/)")

    def run(self, *args, **options):
        stale = []
        for path, document in documents().items():
            if options["dir"]:
                path = options["dir"] / path.name
            text = render(document)
            if path.exists() and path.read_text() == text:
                continue
            stale.append(path.name)
            if not options["check"]:
                path.write_text(text)
        if options["check"] and stale:
            raise ApiError(f"{', '.join(stale)} out of date with the code; run: {REGENERATE}")
        self.stdout.write(f"{'written' if stale and not options['check'] else 'current'}: "
                          f"{', '.join(p.name for p in documents())}")
