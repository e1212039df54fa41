"""Webhook messages: one per event, with a delivery per interested endpoint, queued on commit."""

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.models import AuditEvent
from tenants.models import Certificate, Tenant
from webhooks import events
from webhooks.errors import WebhookError
from webhooks.models import Delivery, Endpoint, Message
from webhooks.selectors import endpoints_for
from webhooks.services.deliveries import deliveries_kick


def _emit(
    *,
    endpoints: list[Endpoint],
    event_type: str,
    tenant: Tenant | None,
    data: dict[str, Any],
    at: datetime,
    audit_event: AuditEvent | None = None,
    dedup_key: str | None = None,
) -> Message:
    payload = {"type": event_type, "timestamp": at.isoformat().replace("+00:00", "Z"), "data": data}
    now = timezone.now()
    with transaction.atomic():
        message = Message.objects.create(
            id=f"msg_{uuid.uuid4().hex}",
            type=event_type,
            tenant=tenant,
            tenant_label=tenant.subdomain if tenant else "",
            payload=payload,
            audit_event=audit_event,
            dedup_key=dedup_key,
        )
        created = Delivery.objects.bulk_create(
            [
                Delivery(
                    message=message, endpoint=endpoint, event_type=event_type,
                    tenant_label=message.tenant_label, next_attempt_at=now,
                )
                for endpoint in endpoints
            ]
        )
        if created:
            transaction.on_commit(deliveries_kick)
    return message


def message_emit(
    *, event_type: str, tenant: Tenant | None, data: dict[str, Any], dedup_key: str | None = None
) -> Message | None:
    """Send an event to every endpoint that wants it (None when no endpoint does)."""
    if event_type not in events.EVENT_TYPES:
        raise WebhookError(f"Unknown webhook event type {event_type!r}; declare it in webhooks.events.")
    endpoints = list(endpoints_for(event_type=event_type, tenant=tenant))
    if not endpoints:
        return None
    return _emit(endpoints=endpoints, event_type=event_type, tenant=tenant, data=data,
                 at=timezone.now(), dedup_key=dedup_key)


def message_emit_for_audit(*, event: AuditEvent, event_type: str) -> Message | None:
    """After the audited change committed: the message, if any endpoint wants it."""
    endpoints = list(endpoints_for(event_type=event_type, tenant=event.tenant))
    if not endpoints:
        return None  # the common case costs this one query
    data = events.data_for(event, event_type)
    shop_data = events.for_shop(event_type, data)
    groups = [(endpoints, data)]
    if shop_data is not None and any(e.tenant_id for e in endpoints):
        groups = [([e for e in endpoints if not e.tenant_id], data),
                  ([e for e in endpoints if e.tenant_id], shop_data)]
    sent = [
        _emit(endpoints=group, event_type=event_type, tenant=event.tenant, data=group_data,
              at=event.created_at, audit_event=event)
        for group, group_data in groups if group
    ]
    return sent[0]


def certificates_expiring_emit(*, now: datetime | None = None) -> int:
    """certificate.expiring, once per certificate, for those within WEBHOOK_CERTIFICATE_EXPIRING_DAYS."""
    now = now or timezone.now()
    horizon = now + timedelta(days=settings.WEBHOOK_CERTIFICATE_EXPIRING_DAYS)
    sent = 0
    expiring = Certificate.objects.filter(
        status=Certificate.Status.ISSUED, not_after__gt=now, not_after__lte=horizon
    ).select_related("domain__tenant__plan")
    for cert in expiring:
        assert cert.not_after is not None
        key = f"certificate.expiring:{cert.domain.domain}:{cert.not_after.isoformat()}"
        if Message.objects.filter(dedup_key=key).exists():
            continue
        days_left = max(0, (cert.not_after - now).days)
        try:
            sent += message_emit(
                event_type="certificate.expiring", tenant=cert.domain.tenant,
                data=events.certificate_expiring_data(cert, days_left), dedup_key=key,
            ) is not None
        except IntegrityError:
            continue  # another run sent it just now
    return sent



def messages_prune(*, now: datetime | None = None) -> int:
    """Delete messages (with their deliveries and attempts) older than WEBHOOK_RETENTION_DAYS,
    except those with a delivery still pending."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.WEBHOOK_RETENTION_DAYS)
    old = Message.objects.filter(created_at__lt=cutoff).exclude(deliveries__status=Delivery.Status.PENDING)
    deleted, _ = Message.objects.filter(pk__in=list(old.values_list("pk", flat=True)[:10000])).delete()
    return deleted
