from django.core.management.base import CommandError

from core.commands import PlatformCommand
from deployments.edges import target_edges_sync


class Command(PlatformCommand):
    help = (
        "Push the current certificates and config to every compose target's edge now (what the "
        "edge_changed sync job does); exit 1 if any edge refused or could not be reached."
    )

    def run(self, *args, **options):
        results = target_edges_sync(actor=self.actor)
        failed = [r for r in results if r.error]
        if failed:
            raise CommandError(
                "; ".join(f"{r.target}: {r.error.splitlines()[0] if r.error else ''}" for r in failed)
            )
        served = ", ".join(f"{r.target} ({r.domains} custom domain(s))" for r in results) or "none"
        self.stdout.write(f"Edges synced: {served}.")
