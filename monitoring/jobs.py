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


def rules_evaluate_job() -> int:
    lock = django_rq.get_connection("default").lock("platform:alert-rules", timeout=300)
    if not lock.acquire(blocking=False):
        return 0
    try:
        return services.rules_evaluate().firing
    finally:
        lock.release()


def deliveries_send_job(delivery_ids: list[int]) -> int:
    from monitoring.models import Delivery

    sent = 0
    for delivery in Delivery.objects.filter(pk__in=delivery_ids).select_related("channel", "incident"):
        sent += services.delivery_send(delivery=delivery).status == Delivery.Status.SENT
    return sent


def test_alert_job(channel_id: int, actor_type: str, actor_name: str) -> str:
    from rq import get_current_job

    from monitoring.models import Channel
    from tenants.audit import Actor

    job = get_current_job()
    actor = Actor(actor_type, actor_name).via_job(job.id if job else "inline")
    return services.alert_test_send(channel=Channel.objects.get(pk=channel_id), actor=actor).status
