from django.core.management.base import CommandError

from backups.services.dr import dr_drill_run
from core.commands import PlatformCommand


class Command(PlatformCommand):
    help = (
        "Disaster-recovery drill: restore the newest platform dump and one shop's newest dump from the "
        "off-site store alone (never the primary store) into a scratch database, check both, record the RTO."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--shop", default="", help="The shop (subdomain) to restore; default: one at random"
        )

    def run(self, *args, **options):
        drill = dr_drill_run(actor=self.actor, trigger="command", subdomain=options["shop"] or None)
        if not drill.passed:
            raise CommandError(f"DR drill {drill.pk} FAILED from {drill.store}: {drill.reason}")
        self.stdout.write(
            f"DR drill {drill.pk} passed: platform {drill.platform_key} and shop {drill.tenant_label} "
            f"({drill.shop_key}) restored from {drill.store} in {drill.rto_seconds:.2f} s (RTO), "
            f"{len(drill.checks)} checks"
        )
