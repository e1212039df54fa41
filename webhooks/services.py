"""Webhooks out: endpoints (create, change, rotate, disable, delete), messages, deliveries.

A delivery is tried at once, then after each wait in WEBHOOK_RETRY_SCHEDULE (RQ's scheduler runs
the retry; a sweep every minute re-queues any whose job was lost), and gives up after the last.
Every attempt is recorded. Each POST goes through core.outbound: checked and pinned addresses (no
private targets unless OUTBOUND_ALLOWED_NETWORKS allows them), one deadline, a capped answer, no
redirects followed.
"""

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import django_rq
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from core import crypto, outbound
from core.audit import Action, Actor, audit_record
from core.models import AuditEvent
from tenants.models import Certificate, Tenant
from webhooks import events, jobs, signing
from webhooks.errors import WebhookError
from webhooks.models import Attempt, Delivery, Endpoint, Message
from webhooks.selectors import endpoints_for

logger = logging.getLogger(__name__)

USER_AGENT = "platform-webhooks/1"


# -- endpoints ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointCreated:
    endpoint: Endpoint
    secret: str  # whsec_...: show it once, it is never shown again


def _url_validate(url: str) -> str:
    url = (url or "").strip()
    if len(url) > 1000:
        raise WebhookError("The endpoint URL is longer than 1,000 characters.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"{url!r} is not an http(s) URL; give the full URL, e.g. https://example.com/hooks.")
    if parts.username or parts.password:
        raise WebhookError("Put no credentials in the endpoint URL: verify the webhook signature instead.")
    try:
        _ = parts.port
    except ValueError:
        raise WebhookError(f"{url!r} has an invalid port.") from None
    host = parts.hostname
    if host == "localhost" or host.endswith(".localhost"):
        host = "127.0.0.1"
    try:
        outbound.check_address(host)
    except ValueError:
        pass  # a name: it is resolved and checked at every delivery
    except outbound.OutboundRefused as exc:
        raise WebhookError(f"The endpoint URL is {exc}") from None
    return url


def _events_validate(chosen: list[str] | None) -> list[str]:
    chosen = sorted(set(chosen or []))
    unknown = [name for name in chosen if name not in events.EVENT_TYPES]
    if unknown:
        raise WebhookError(
            f"Unknown event type(s) {', '.join(unknown)}: use any of {', '.join(events.EVENT_TYPES)} "
            "(or none for every event)."
        )
    return chosen


def _owner_label(endpoint: Endpoint) -> str:
    return endpoint.tenant.subdomain if endpoint.tenant else "platform"


def endpoint_validate(*, url: str, events: list[str] | None, secret: str = "",
                      tenant: Tenant | None = None) -> None:
    """Raise WebhookError saying what to fix (forms call this before saving)."""
    _url_validate(url)
    _events_validate(events)
    if secret:
        signing.secret_validate(secret)
    if tenant is not None and tenant.status == Tenant.Status.DELETED:
        raise WebhookError(f"Shop {tenant.subdomain!r} is deleted; it cannot get a webhook endpoint.")


def endpoint_create(
    *,
    url: str,
    actor: Actor,
    tenant: Tenant | None = None,
    events: list[str] | None = None,
    description: str = "",
    secret: str = "",
) -> EndpointCreated:
    """A new endpoint: the platform's (tenant None, every shop's events) or one shop's.

    `secret` empty: a new `whsec_` secret is made. The secret is returned once, here.
    """
    url = _url_validate(url)
    chosen = _events_validate(events)
    if tenant is not None and tenant.status == Tenant.Status.DELETED:
        raise WebhookError(f"Shop {tenant.subdomain!r} is deleted; it cannot get a webhook endpoint.")
    description = (description or "").strip()
    if len(description) > 200:
        raise WebhookError("The description is longer than 200 characters.")
    secret = signing.secret_validate(secret) if secret else signing.secret_generate()
    with transaction.atomic():
        endpoint = Endpoint.objects.create(
            tenant=tenant,
            url=url,
            description=description,
            events=chosen,
            secret_encrypted=crypto.secret_encrypt(secret.encode()),
            created_by=f"{actor.type}:{actor.name}"[:250],
        )
        audit_record(
            actor=actor,
            action=Action.WEBHOOK_ENDPOINT_CREATED,
            tenant=tenant,
            target=url,
            details={"endpoint": endpoint.pk, "events": chosen or "all"},
        )
    return EndpointCreated(endpoint, secret)


def endpoint_update(
    *,
    endpoint: Endpoint,
    actor: Actor,
    url: str | None = None,
    events: list[str] | None = None,
    description: str | None = None,
) -> Endpoint:
    """Change an endpoint's URL, events or description (None keeps a field as it is)."""
    changes: dict[str, Any] = {}
    if url is not None and (url := _url_validate(url)) != endpoint.url:
        changes["url"] = url
    if events is not None and (chosen := _events_validate(events)) != endpoint.events:
        changes["events"] = chosen
    if description is not None and (description := description.strip()) != endpoint.description:
        if len(description) > 200:
            raise WebhookError("The description is longer than 200 characters.")
        changes["description"] = description
    if not changes:
        return endpoint
    with transaction.atomic():
        for field, value in changes.items():
            setattr(endpoint, field, value)
        endpoint.save(update_fields=[*changes, "updated_at"])
        audit_record(
            actor=actor,
            action=Action.WEBHOOK_ENDPOINT_CHANGED,
            tenant=endpoint.tenant,
            target=endpoint.url,
            details={"endpoint": endpoint.pk, "fields": sorted(changes)},
        )
    return endpoint


def endpoint_rotate_secret(*, endpoint: Endpoint, actor: Actor, secret: str = "") -> str:
    """A new secret (returned once); the old one also signs for WEBHOOK_SECRET_ROTATION_GRACE_HOURS."""
    secret = signing.secret_validate(secret) if secret else signing.secret_generate()
    grace = timedelta(hours=settings.WEBHOOK_SECRET_ROTATION_GRACE_HOURS)
    with transaction.atomic():
        endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        endpoint.previous_secret_encrypted = endpoint.secret_encrypted if grace else ""
        endpoint.previous_secret_expires_at = timezone.now() + grace if grace else None
        endpoint.secret_encrypted = crypto.secret_encrypt(secret.encode())
        endpoint.save(update_fields=[
            "secret_encrypted", "previous_secret_encrypted", "previous_secret_expires_at", "updated_at"
        ])
        audit_record(
            actor=actor,
            action=Action.WEBHOOK_ENDPOINT_SECRET_ROTATED,
            tenant=endpoint.tenant,
            target=endpoint.url,
            details={"endpoint": endpoint.pk,
                     "old_secret_signs_until": _iso(endpoint.previous_secret_expires_at)},
        )
    return secret


def endpoint_disable(*, endpoint: Endpoint, actor: Actor, reason: str) -> bool:
    """Stop sending to an endpoint; its pending deliveries fail at their next turn. False: it was off."""
    with transaction.atomic():
        if not Endpoint.objects.filter(pk=endpoint.pk, enabled=True).update(
            enabled=False, disabled_reason=reason[:300], updated_at=timezone.now()
        ):
            return False
        endpoint.enabled, endpoint.disabled_reason = False, reason[:300]
        audit_record(
            actor=actor,
            action=Action.WEBHOOK_ENDPOINT_DISABLED,
            tenant=endpoint.tenant,
            target=endpoint.url,
            details={"endpoint": endpoint.pk, "reason": reason[:300]},
        )
    return True


def endpoint_enable(*, endpoint: Endpoint, actor: Actor) -> bool:
    """Send again (failures forgotten). Deliveries that failed meanwhile can be re-sent."""
    with transaction.atomic():
        if not Endpoint.objects.filter(pk=endpoint.pk, enabled=False).update(
            enabled=True, disabled_reason="", consecutive_failures=0, failing_since=None,
            updated_at=timezone.now(),
        ):
            return False
        endpoint.enabled, endpoint.disabled_reason = True, ""
        audit_record(
            actor=actor,
            action=Action.WEBHOOK_ENDPOINT_ENABLED,
            tenant=endpoint.tenant,
            target=endpoint.url,
            details={"endpoint": endpoint.pk},
        )
    return True


def endpoint_delete(*, endpoint: Endpoint, actor: Actor) -> None:
    """Delete an endpoint with its deliveries and their attempts."""
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=Action.WEBHOOK_ENDPOINT_DELETED,
            tenant=endpoint.tenant,
            target=endpoint.url,
            details={"endpoint": endpoint.pk, "owner": _owner_label(endpoint)},
        )
        endpoint.delete()


# -- messages -------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


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
        for delivery in created:
            jobs.delivery_send_job.delay(delivery.pk)  # django-rq enqueues when this commits
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
    return _emit(endpoints=endpoints, event_type=event_type, tenant=event.tenant,
                 data=events.data_for(event, event_type), at=event.created_at, audit_event=event)


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


# -- deliveries -----------------------------------------------------------------------------------


def _secrets(endpoint: Endpoint, now: datetime) -> list[str]:
    found = [crypto.secret_decrypt(endpoint.secret_encrypted).decode()]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires and expires > now:
        found.append(crypto.secret_decrypt(endpoint.previous_secret_encrypted).decode())
    return found


def message_body(message: Message) -> bytes:
    """The exact bytes sent (and signed): compact JSON, keys sorted, the same on every attempt."""
    return json.dumps(message.payload, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class _Outcome:
    ok: bool
    code: int | None = None
    body: str = ""
    error: str = ""


def _post(endpoint: Endpoint, message: Message) -> _Outcome:
    body = message_body(message)
    now = timezone.now()  # the signing time is the real one, whatever time the attempt was due
    try:
        secrets = _secrets(endpoint, now)
    except ImproperlyConfigured as exc:  # a removed encryption key: every retry would fail too
        return _Outcome(False, error=f"cannot read the endpoint's secret: {exc} Or rotate its secret.")
    headers = signing.sign_headers(msg_id=message.id, body=body, secrets=secrets, at=now)
    try:
        response = outbound.fetch(
            endpoint.url,
            method="POST",
            body=body,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
            max_bytes=settings.WEBHOOK_RESPONSE_MAX_BYTES,
            max_redirects=0,
        )
    except outbound.OutboundError as exc:
        return _Outcome(False, error=str(exc))
    text = response.text
    if 200 <= response.status < 300:
        return _Outcome(True, response.status, text)
    why = f"HTTP {response.status}"
    if 300 <= response.status < 400:
        why += " (redirects are not followed)"
    return _Outcome(False, response.status, text, why)


def delivery_attempt(*, delivery_id: int, now: datetime | None = None) -> Delivery | None:
    """Make the next attempt of a due delivery; None when it is not due (sent, gave up, not yet
    time, or another worker holds it). Records the attempt and schedules the retry or gives up."""
    now = now or timezone.now()
    lease = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS + 60)
    if not Delivery.objects.filter(
        pk=delivery_id, status=Delivery.Status.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=lease):
        return None
    delivery = Delivery.objects.select_related("endpoint", "message").get(pk=delivery_id)
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        delivery.status, delivery.next_attempt_at = Delivery.Status.FAILED, None
        delivery.last_error = "not sent: the endpoint is disabled (enable it, then re-send)"
        delivery.save(update_fields=["status", "next_attempt_at", "last_error"])
        return delivery
    started = time.monotonic()
    outcome = _post(endpoint, delivery.message)
    elapsed = time.monotonic() - started
    finished = now + timedelta(seconds=elapsed)
    delivery.attempts += 1
    Attempt.objects.create(
        delivery=delivery,
        number=delivery.attempts,
        at=now,
        succeeded=outcome.ok,
        response_code=outcome.code,
        duration_ms=round(elapsed * 1000, 1),
        response_body=outcome.body,
        error=outcome.error[:500],
    )
    delivery.last_attempt_at, delivery.response_code = now, outcome.code
    delivery.last_error = outcome.error[:500]
    retry_in = None
    if outcome.ok:
        delivery.status, delivery.next_attempt_at, delivery.delivered_at = (
            Delivery.Status.SUCCEEDED, None, finished
        )
        Endpoint.objects.filter(pk=endpoint.pk).update(
            consecutive_failures=0, failing_since=None, last_success_at=finished
        )
    else:
        schedule = settings.WEBHOOK_RETRY_SCHEDULE
        if delivery.attempts <= len(schedule):
            retry_in = schedule[delivery.attempts - 1]
            delivery.next_attempt_at = finished + timedelta(seconds=retry_in)
        else:
            delivery.status, delivery.next_attempt_at = Delivery.Status.FAILED, None
            delivery.last_error = f"gave up after {delivery.attempts} attempts: {outcome.error}"[:500]
        Endpoint.objects.filter(pk=endpoint.pk).update(
            consecutive_failures=F("consecutive_failures") + 1, failing_since=Coalesce("failing_since", now)
        )
    delivery.save(update_fields=[
        "status", "attempts", "next_attempt_at", "last_attempt_at", "response_code", "last_error",
        "delivered_at",
    ])
    if retry_in is not None:
        _retry_schedule(delivery.pk, retry_in)
    if not outcome.ok:
        _disable_if_failing(endpoint, finished)
    return delivery


def deliveries_send_due(*, limit: int = 50, seconds: float = 5.0) -> int:
    """Attempt due deliveries, oldest first, up to `limit` or `seconds`: a delivery job drains what
    else is due, so a burst costs a few jobs' work, not a forked work horse per delivery."""
    deadline, sent = time.monotonic() + seconds, 0
    while sent < limit and time.monotonic() < deadline:
        due = list(
            Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=timezone.now())
            .order_by("next_attempt_at").values_list("pk", flat=True)[:10]
        )
        if not due:
            break
        for pk in due:
            sent += delivery_attempt(delivery_id=pk) is not None  # another worker may have claimed it
    return sent


def _retry_schedule(delivery_id: int, seconds: int) -> None:
    queue = django_rq.get_queue(jobs.delivery_send_job.queue_name)
    if seconds <= 0:
        queue.enqueue(jobs.delivery_send_job, delivery_id)
    else:
        # Needs a worker started with --with-scheduler; deliveries_requeue_overdue covers one without.
        queue.enqueue_in(timedelta(seconds=seconds), jobs.delivery_send_job, delivery_id)


def _disable_if_failing(endpoint: Endpoint, now: datetime) -> None:
    endpoint.refresh_from_db(fields=["enabled", "consecutive_failures", "failing_since"])
    if not endpoint.enabled or endpoint.failing_since is None:
        return
    failing_for = now - endpoint.failing_since
    if (
        endpoint.consecutive_failures >= settings.WEBHOOK_DISABLE_AFTER_FAILURES
        and failing_for >= timedelta(hours=settings.WEBHOOK_DISABLE_AFTER_HOURS)
    ):
        hours = failing_for.total_seconds() / 3600
        endpoint_disable(
            endpoint=endpoint,
            actor=Actor.system("webhook deliveries"),
            reason=f"{endpoint.consecutive_failures} failed attempts in a row over {hours:.1f} h; "
            "fix the receiver, enable the endpoint, then re-send the failed deliveries",
        )


def deliveries_requeue_overdue(*, now: datetime | None = None, limit: int = 1000) -> int:
    """Queue pending deliveries whose retry is more than a minute late (a lost job, or a worker
    without the scheduler). A queued twin does nothing: the first to claim the delivery wins."""
    now = now or timezone.now()
    overdue = list(
        Delivery.objects.filter(
            status=Delivery.Status.PENDING, next_attempt_at__lte=now - timedelta(seconds=60)
        ).order_by("next_attempt_at").values_list("pk", flat=True)[:limit]
    )
    for pk in overdue:
        jobs.delivery_send_job.delay(pk)
    return len(overdue)


def messages_prune(*, now: datetime | None = None) -> int:
    """Delete messages (with their deliveries and attempts) older than WEBHOOK_RETENTION_DAYS,
    except those with a delivery still pending."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.WEBHOOK_RETENTION_DAYS)
    old = Message.objects.filter(created_at__lt=cutoff).exclude(deliveries__status=Delivery.Status.PENDING)
    deleted, _ = Message.objects.filter(pk__in=list(old.values_list("pk", flat=True)[:10000])).delete()
    return deleted


def delivery_resend(*, delivery: Delivery, actor: Actor) -> Delivery:
    """Send a delivery's message to its endpoint again, as a new delivery (same webhook-id)."""
    endpoint = Endpoint.objects.select_related("tenant").get(pk=delivery.endpoint_id)  # as it is now
    if not endpoint.enabled:
        raise WebhookError(
            f"The endpoint {endpoint.url} is disabled ({endpoint.disabled_reason or 'by staff'}); "
            "enable it first, then re-send."
        )
    with transaction.atomic():
        again = Delivery.objects.create(
            message=delivery.message, endpoint=endpoint, event_type=delivery.event_type,
            tenant_label=delivery.tenant_label, next_attempt_at=timezone.now(), resend_of=delivery,
        )
        audit_record(
            actor=actor,
            action=Action.WEBHOOK_DELIVERY_RESENT,
            tenant=endpoint.tenant,
            target=delivery.message_id,
            details={"delivery": delivery.pk, "new_delivery": again.pk, "endpoint": endpoint.pk},
        )
        jobs.delivery_send_job.delay(again.pk)
    return again
