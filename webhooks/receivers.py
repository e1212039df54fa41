"""The audit trail's signal, heard here: mapped events become webhook messages after commit."""

from functools import partial
from typing import Any

from django.db import transaction

from core.models import AuditEvent
from webhooks.events import event_type_for


def audit_event_recorded(sender: type, event: AuditEvent, **kwargs: Any) -> None:
    event_type = event_type_for(event)
    if event_type is None:
        return
    from webhooks.services import message_emit_for_audit

    # Only what committed is told; a failure to emit must not fail the caller's commit.
    transaction.on_commit(partial(message_emit_for_audit, event=event, event_type=event_type), robust=True)
