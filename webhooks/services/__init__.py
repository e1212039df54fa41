"""Webhooks out: endpoints (create, change, rotate, disable, delete), messages, deliveries.

A delivery is tried at once, then after each wait in WEBHOOK_RETRY_SCHEDULE (RQ's scheduler runs
the retry; a sweep every minute re-queues any whose job was lost), and gives up after the last.
Every attempt is recorded. Each POST goes through core.outbound: checked and pinned addresses (no
private targets unless OUTBOUND_ALLOWED_NETWORKS allows them), one deadline, a capped answer, no
redirects followed.
"""

from webhooks.services.deliveries import (
    SEND_QUEUED,
    deliveries_due_count,
    deliveries_kick,
    deliveries_requeue_overdue,
    deliveries_send_batch,
    deliveries_send_due,
    delivery_attempt,
    delivery_resend,
    message_body,
)
from webhooks.services.endpoints import (
    EndpointCreated,
    endpoint_create,
    endpoint_delete,
    endpoint_disable,
    endpoint_enable,
    endpoint_rotate_secret,
    endpoint_update,
    endpoint_validate,
)
from webhooks.services.messages import (
    certificates_expiring_emit,
    message_emit,
    message_emit_for_audit,
    messages_prune,
)

__all__ = [
    "SEND_QUEUED",
    "EndpointCreated",
    "deliveries_due_count",
    "deliveries_kick",
    "certificates_expiring_emit",
    "deliveries_requeue_overdue",
    "deliveries_send_batch",
    "deliveries_send_due",
    "delivery_attempt",
    "delivery_resend",
    "endpoint_create",
    "endpoint_delete",
    "endpoint_disable",
    "endpoint_enable",
    "endpoint_rotate_secret",
    "endpoint_update",
    "endpoint_validate",
    "message_body",
    "message_emit",
    "message_emit_for_audit",
    "messages_prune",
]
