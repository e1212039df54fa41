"""Exit 0 when the database, Redis and the workers are ready; 1 (naming what failed) otherwise."""

import json

from django.core.management.base import CommandError

from core.commands import PlatformCommand
from monitoring.health import readiness_checks


class Command(PlatformCommand):
    help = "Check the database, Redis and RQ workers, like /readyz; exit 1 when one fails."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print every check as JSON")

    def run(self, *args, **options):
        checks = readiness_checks()
        if options["json"]:
            self.stdout.write(json.dumps({c.name: c.as_dict() for c in checks}))
        failed = [c for c in checks if not c.ok]
        if failed:
            raise CommandError("; ".join(f"{c.name}: {c.detail}" for c in failed))
        if not options["json"]:
            self.stdout.write(", ".join(f"{c.name} ok ({c.ms:.0f} ms)" for c in checks))
