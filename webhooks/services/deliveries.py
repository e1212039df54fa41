"""Delivering messages: one attempt at a time, signed, through core.outbound; retries on a
schedule, giving up, disabling an endpoint that keeps failing, re-sending."""

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import django_rq
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from core import crypto, outbound
from core.audit import Action, Actor, audit_record
from webhooks import jobs, signing
from webhooks.errors import WebhookError
from webhooks.models import Attempt, Delivery, Endpoint, Message
from webhooks.services.endpoints import PLAIN_HTTP_REFUSED, endpoint_disable, plain_http_allowed

USER_AGENT = "platform-webhooks/1"


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
    parts = urlsplit(endpoint.url)
    if parts.scheme == "http" and not plain_http_allowed(parts.hostname or ""):
        # Saved when allowed; the setting or the name's addresses changed since: not sent in clear.
        # A refused address says so first, as it would for https.
        try:
            outbound.check_address(parts.hostname or "")
        except ValueError:
            pass  # a name
        except outbound.OutboundRefused as exc:
            return _Outcome(False, error=str(exc))
        return _Outcome(False, error="not sent: " + PLAIN_HTTP_REFUSED.format(url=endpoint.url))
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


SEND_QUEUED = "webhooks:send-job-queued"


def deliveries_kick() -> None:
    """Queue one deliveries_send_job unless one is queued and not started yet: a burst of events
    costs a few jobs, not a forked work horse per delivery. The job clears the flag as it starts,
    before it looks for work, so a delivery committed meanwhile is never left without a job."""
    if django_rq.get_connection(jobs.deliveries_send_job.queue_name).set(SEND_QUEUED, "1", nx=True, ex=60):
        jobs.deliveries_send_job.delay()


def deliveries_send_due(*, limit: int = 50, seconds: float = 5.0) -> int:
    """Attempt due deliveries, oldest first, up to `limit` or `seconds`; another worker may send
    some of them at the same time (each delivery is claimed before its attempt)."""
    deadline, sent = time.monotonic() + seconds, 0
    while sent < limit and time.monotonic() < deadline:
        due = list(
            Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=timezone.now())
            .order_by("next_attempt_at").values_list("pk", flat=True)[: min(10, limit - sent)]
        )
        if not due:
            break
        for pk in due:
            sent += delivery_attempt(delivery_id=pk) is not None  # another worker may have claimed it
    return sent


def deliveries_send_batch(*, limit: int = 500, seconds: float = 30.0) -> int:
    """The send job's work: clear the "queued" flag (before looking for work), send what is due
    (up to 500 deliveries or 30 s), and queue a successor when work is left."""
    django_rq.get_connection(jobs.deliveries_send_job.queue_name).delete(SEND_QUEUED)
    sent = deliveries_send_due(limit=limit, seconds=seconds)
    if deliveries_due_count():
        deliveries_kick()
    return sent


def deliveries_due_count() -> int:
    due = Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=timezone.now())
    return due.count()


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


def deliveries_requeue_overdue(*, now: datetime | None = None) -> int:
    """How many pending deliveries are more than a minute late (a lost job, a worker without the
    scheduler); if any, a send job is queued for them, whatever the flag says (once a minute)."""
    now = now or timezone.now()
    overdue = Delivery.objects.filter(
        status=Delivery.Status.PENDING, next_attempt_at__lte=now - timedelta(seconds=60)
    ).count()
    if overdue:
        jobs.deliveries_send_job.delay()
    return overdue


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
        transaction.on_commit(deliveries_kick)
    return again
