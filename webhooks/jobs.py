"""RQ jobs for webhooks: thin and idempotent, bound to their queue here."""

from core.jobs import job
from webhooks import services


@job("default")
def deliveries_send_job() -> int:
    return services.deliveries_send_batch()


@job("default")
def delivery_send_job(delivery_id: int) -> str:
    """One delivery's scheduled retry (claimed first: a duplicate or early job does nothing)."""
    delivery = services.delivery_attempt(delivery_id=delivery_id)
    return delivery.status if delivery else "not due"


@job("default")
def deliveries_overdue_job() -> int:
    return services.deliveries_requeue_overdue()


@job("long")
def messages_prune_job() -> int:
    return services.messages_prune()


@job("default")
def certificates_expiring_job() -> int:
    return services.certificates_expiring_emit()
