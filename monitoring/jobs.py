"""RQ jobs for monitoring: thin and idempotent, one service each."""

import django_rq

from monitoring import services


def probe_shops_job() -> int:
    # One probe round at a time: a slow round must not pile up behind the next tick.
    lock = django_rq.get_connection("default").lock("platform:probe-shops", timeout=600)
    if not lock.acquire(blocking=False):
        return 0
    try:
        summary = services.probe_run()
        services.probe_prune()
        return summary.total
    finally:
        lock.release()
