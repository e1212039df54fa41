"""RQ jobs for webhooks: thin and idempotent, bound to their queue here."""

from core.jobs import job
from webhooks import services


@job("default")
def delivery_send_job(delivery_id: int) -> str:
    # Claims the delivery first: a duplicate or early job does nothing. Then drains what else is
    # due (bounded), so the jobs of a burst mostly find their delivery already sent.
    delivery = services.delivery_attempt(delivery_id=delivery_id)
    others = services.deliveries_send_due()
    return f"{delivery.status if delivery else 'not due'}; {others} other(s) sent"


@job("default")
def deliveries_overdue_job() -> int:
    return services.deliveries_requeue_overdue()


@job("long")
def messages_prune_job() -> int:
    return services.messages_prune()


@job("default")
def certificates_expiring_job() -> int:
    return services.certificates_expiring_emit()
