"""The API's scheduled work (platform_site/cron.py)."""

from api import services
from core.jobs import job


@job("long")
def api_reads_prune_job() -> int:
    return services.api_reads_prune()
