"""RQ jobs for monitoring: thin and idempotent, one service each, bound to their queue here."""

import django_rq

from core.audit import Actor
from core.jobs import job
from monitoring.models import Channel, Delivery
from monitoring.services import alerts, probing


@job("default")
def probe_shops_job() -> int:
    # One probe round at a time: a slow round must not pile up behind the next tick.
    lock = django_rq.get_connection("default").lock("platform:probe-shops", timeout=600)
    if not lock.acquire(blocking=False):
        return 0
    try:
        summary = probing.probe_run()
        probing.probe_prune()
        return summary.total
    finally:
        lock.release()


@job("default")
def rules_evaluate_job() -> int:
    lock = django_rq.get_connection("default").lock("platform:alert-rules", timeout=300)
    if not lock.acquire(blocking=False):
        return 0
    try:
        return alerts.rules_evaluate().firing
    finally:
        lock.release()


@job("default")
def deliveries_send_job(delivery_ids: list[int]) -> int:
    sent = 0
    for delivery in Delivery.objects.filter(pk__in=delivery_ids).select_related("channel", "incident"):
        sent += alerts.delivery_send(delivery=delivery).status == Delivery.Status.SENT
    return sent


@job("default")
def test_alert_job(channel_id: int, actor_type: str, actor_name: str) -> str:
    channel = Channel.objects.get(pk=channel_id)
    return alerts.alert_test_send(channel=channel, actor=Actor.for_job(actor_type, actor_name)).status
