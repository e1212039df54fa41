"""Delivery to a real local receiver: signatures, retries after 500s and timeouts, giving up,
disabling a failing endpoint, re-send, and refusal of private targets."""

import time
from datetime import timedelta

import django_rq
import pytest
from django.utils import timezone
from standardwebhooks import Webhook

from core.audit import Action, Actor
from core.models import AuditEvent
from tenants.services import tenant_resume, tenant_suspend
from tests.webhooks.receiver import spec_verify
from webhooks import services
from webhooks.errors import WebhookError
from webhooks.models import Attempt, Delivery, Endpoint, Message

ACTOR = Actor.command("pytest")


@pytest.fixture
def alpha(make_tenant):
    return make_tenant("alpha")


def suspend(tenant, capture):
    with capture(execute=True):
        tenant_suspend(tenant=tenant, reason="unpaid invoice", actor=ACTOR)


def only_delivery() -> Delivery:
    (delivery,) = Delivery.objects.all()
    return delivery


def test_a_delivery_is_signed_and_carries_the_event(alpha, receiver, django_capture_on_commit_callbacks):
    created = services.endpoint_create(url=receiver.url(), tenant=alpha, actor=ACTOR)
    suspend(alpha, django_capture_on_commit_callbacks)
    delivery = services.delivery_attempt(delivery_id=only_delivery().pk)
    assert delivery is not None and delivery.status == Delivery.Status.SUCCEEDED
    (got,) = receiver.received
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == delivery.message_id and got.headers["webhook-id"].startswith("msg_")
    assert spec_verify(created.secret, got)
    body = Webhook(created.secret).verify(got.body, got.headers)
    assert body["type"] == "tenant.suspended"
    assert body["data"]["tenant"] == {
        "id": str(alpha.pk), "subdomain": "alpha", "name": "Alpha", "status": "suspended",
        "status_reason": "unpaid invoice", "plan": "growth",
    }
    assert body["data"]["reason"] == "unpaid invoice"
    assert body["timestamp"].endswith("Z")
    (attempt,) = Attempt.objects.filter(delivery=delivery)
    assert (attempt.number, attempt.succeeded, attempt.response_code) == (1, True, 204)
    assert attempt.duration_ms is not None and attempt.duration_ms > 0
    # Done: a second job for the same delivery does nothing.
    assert services.delivery_attempt(delivery_id=delivery.pk) is None
    assert len(receiver.received) == 1


def test_no_endpoint_no_message(alpha, django_capture_on_commit_callbacks):
    suspend(alpha, django_capture_on_commit_callbacks)
    assert not Message.objects.exists()


def test_a_rolled_back_change_sends_nothing(alpha, receiver, django_capture_on_commit_callbacks):
    services.endpoint_create(url=receiver.url(), actor=ACTOR)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError):
            from django.db import transaction

            with transaction.atomic():
                tenant_suspend(tenant=alpha, reason="oops", actor=ACTOR)
                raise RuntimeError("rolled back")
    assert callbacks == [] and not Message.objects.exists()


def test_retries_follow_the_schedule_then_give_up(alpha, receiver, settings,
                                                  django_capture_on_commit_callbacks):
    settings.WEBHOOK_RETRY_SCHEDULE = [5, 300]
    settings.WEBHOOK_RESPONSE_MAX_BYTES = 100
    receiver.default = 500
    services.endpoint_create(url=receiver.url(), actor=ACTOR)
    suspend(alpha, django_capture_on_commit_callbacks)
    delivery = only_delivery()
    now = timezone.now()
    first = services.delivery_attempt(delivery_id=delivery.pk, now=now)
    assert first is not None and first.status == Delivery.Status.PENDING
    assert first.last_error == "HTTP 500" and first.response_code == 500
    assert timedelta(seconds=5) <= first.next_attempt_at - now < timedelta(seconds=7)
    # The retry waits in RQ's scheduled registry for the worker's scheduler.
    assert django_rq.get_queue("default").scheduled_job_registry.count == 1
    assert services.delivery_attempt(delivery_id=delivery.pk, now=now + timedelta(seconds=2)) is None
    second = services.delivery_attempt(delivery_id=delivery.pk, now=now + timedelta(seconds=6))
    assert second is not None and second.status == Delivery.Status.PENDING
    wait = second.next_attempt_at - (now + timedelta(seconds=6))
    assert timedelta(seconds=300) <= wait < timedelta(seconds=302)
    last = services.delivery_attempt(delivery_id=delivery.pk, now=now + timedelta(seconds=400))
    assert last is not None and last.status == Delivery.Status.FAILED and last.next_attempt_at is None
    assert last.last_error == "gave up after 3 attempts: HTTP 500"
    attempts = list(
        Attempt.objects.filter(delivery=delivery).values_list("number", "succeeded", "response_code")
    )
    assert attempts == [(1, False, 500), (2, False, 500), (3, False, 500)]
    # The answer is kept, cut at WEBHOOK_RESPONSE_MAX_BYTES.
    body = Attempt.objects.filter(delivery=delivery).first().response_body
    assert body.startswith("reply 500 from the test receiver") and len(body) == 100
    assert len(receiver.received) == 3
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1  # the same id each time
    # Signed at the real time of sending, not the time the attempt was due.
    assert abs(int(receiver.received[-1].headers["webhook-timestamp"]) - time.time()) < 60


def test_a_timeout_is_a_failed_attempt_and_the_next_one_succeeds(alpha, receiver, settings,
                                                                  django_capture_on_commit_callbacks):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    receiver.script["/hooks"] = [("sleep", 2)]
    services.endpoint_create(url=receiver.url(), actor=ACTOR)
    suspend(alpha, django_capture_on_commit_callbacks)
    delivery = only_delivery()
    now = timezone.now()
    first = services.delivery_attempt(delivery_id=delivery.pk, now=now)
    assert first is not None and first.status == Delivery.Status.PENDING
    assert first.last_error == "timed out after 0.5 s" and first.response_code is None
    second = services.delivery_attempt(delivery_id=delivery.pk, now=now + timedelta(seconds=10))
    assert second is not None and second.status == Delivery.Status.SUCCEEDED and second.attempts == 2
    endpoint = Endpoint.objects.get()
    assert endpoint.consecutive_failures == 0 and endpoint.last_success_at is not None


def test_private_targets_are_refused_at_creation_and_at_delivery(alpha, receiver, settings,
                                                                   django_capture_on_commit_callbacks):
    services.endpoint_create(url=receiver.url(), actor=ACTOR)  # allowed while the test allows loopback
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    for url, kind in [
        ("http://127.0.0.1:8080/x", "a loopback"),
        ("http://localhost/x", "a loopback"),
        ("http://10.1.2.3/x", "a private"),
        ("http://169.254.169.254/latest/meta-data", "a cloud metadata"),
        ("http://[::1]/x", "a loopback"),
    ]:
        with pytest.raises(WebhookError, match=f"is {kind}.*allow it with OUTBOUND_ALLOWED_NETWORKS"):
            services.endpoint_create(url=url, actor=ACTOR)
    suspend(alpha, django_capture_on_commit_callbacks)
    delivery = services.delivery_attempt(delivery_id=only_delivery().pk)
    assert delivery is not None and delivery.status == Delivery.Status.PENDING
    assert delivery.last_error.startswith("refused: 127.0.0.1 is a loopback address")
    assert receiver.received == []


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"url": "ftp://example.com/x"}, "is not an http(s) URL"),
        ({"url": "example.com/hooks"}, "is not an http(s) URL"),
        ({"url": "https://user:pw@example.com/x"}, "no credentials"),
        ({"url": "https://example.com:99999/x"}, "invalid port"),
        ({"url": "https://example.com/" + "x" * 1000}, "longer than 1,000"),
        ({"url": "https://example.com/x", "events": ["tenant.exploded"]},
         "Unknown event type(s) tenant.exploded"),
        ({"url": "https://example.com/x", "secret": "nope"}, "starts with 'whsec_'"),
        ({"url": "https://example.com/x", "description": "d" * 201}, "longer than 200"),
    ],
)
def test_bad_endpoints_are_refused_with_what_to_fix(db, kwargs, says):
    with pytest.raises(WebhookError) as error:
        services.endpoint_create(actor=ACTOR, **kwargs)
    assert says in str(error.value)
    assert not Endpoint.objects.exists() and not AuditEvent.objects.exists()


def test_an_endpoint_failing_for_long_is_disabled_and_audited(alpha, receiver, settings,
                                                              django_capture_on_commit_callbacks):
    settings.WEBHOOK_RETRY_SCHEDULE = [1, 1, 1, 1]
    settings.WEBHOOK_DISABLE_AFTER_FAILURES = 3
    settings.WEBHOOK_DISABLE_AFTER_HOURS = 1
    receiver.default = 503
    created = services.endpoint_create(url=receiver.url(), actor=ACTOR)
    suspend(alpha, django_capture_on_commit_callbacks)
    delivery = only_delivery()
    start = timezone.now()
    for minutes in (0, 30, 61):  # three failures, the first over an hour before the last
        services.delivery_attempt(delivery_id=delivery.pk, now=start + timedelta(minutes=minutes))
    endpoint = Endpoint.objects.get()
    assert not endpoint.enabled
    assert endpoint.disabled_reason.startswith("3 failed attempts in a row over 1.0 h")
    event = AuditEvent.objects.get(action=Action.WEBHOOK_ENDPOINT_DISABLED)
    assert event.actor == "webhook deliveries" and event.details["endpoint"] == endpoint.pk
    # Its pending delivery is not sent any more, and says why.
    last = services.delivery_attempt(delivery_id=delivery.pk, now=start + timedelta(minutes=90))
    assert last is not None and last.status == Delivery.Status.FAILED
    assert "endpoint is disabled" in last.last_error and len(receiver.received) == 3
    with pytest.raises(WebhookError, match="is disabled .* enable it first"):
        services.delivery_resend(delivery=last, actor=ACTOR)
    # Enabled again: the failures are forgotten and a re-send goes out.
    receiver.default = 200
    assert services.endpoint_enable(endpoint=created.endpoint, actor=ACTOR)
    with django_capture_on_commit_callbacks(execute=True):
        again = services.delivery_resend(delivery=last, actor=ACTOR)
    sent = services.delivery_attempt(delivery_id=again.pk)
    assert sent is not None and sent.status == Delivery.Status.SUCCEEDED and sent.resend_of_id == delivery.pk


def test_resend_sends_the_same_message_again_and_is_audited(alpha, receiver,
                                                            django_capture_on_commit_callbacks):
    created = services.endpoint_create(url=receiver.url(), actor=ACTOR)
    suspend(alpha, django_capture_on_commit_callbacks)
    first = services.delivery_attempt(delivery_id=only_delivery().pk)
    assert first is not None
    with django_capture_on_commit_callbacks(execute=True):
        again = services.delivery_resend(delivery=first, actor=ACTOR)
    # Queued for the worker on commit.
    assert django_rq.get_queue("default").job_ids
    services.delivery_attempt(delivery_id=again.pk)
    one, two = receiver.received
    assert one.body == two.body and one.headers["webhook-id"] == two.headers["webhook-id"]
    assert spec_verify(created.secret, two)
    event = AuditEvent.objects.get(action=Action.WEBHOOK_DELIVERY_RESENT)
    assert event.target == first.message_id and event.details["new_delivery"] == again.pk


def test_a_rotated_secret_signs_with_the_old_one_during_the_grace(alpha, receiver, settings,
                                                                   django_capture_on_commit_callbacks):
    created = services.endpoint_create(url=receiver.url(), actor=ACTOR)
    new = services.endpoint_rotate_secret(endpoint=created.endpoint, actor=ACTOR)
    assert new != created.secret and new.startswith("whsec_")
    suspend(alpha, django_capture_on_commit_callbacks)
    services.delivery_attempt(delivery_id=only_delivery().pk)
    (got,) = receiver.received
    assert spec_verify(new, got) and spec_verify(created.secret, got)
    # After the grace only the new secret signs.
    Endpoint.objects.update(previous_secret_expires_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        tenant_resume(tenant=alpha, actor=ACTOR)
    services.delivery_attempt(delivery_id=Delivery.objects.get(event_type="tenant.resumed").pk)
    latest = receiver.received[-1]
    assert spec_verify(new, latest) and not spec_verify(created.secret, latest)
    assert AuditEvent.objects.filter(action=Action.WEBHOOK_ENDPOINT_SECRET_ROTATED).count() == 1


def test_the_secret_is_encrypted_at_rest(db):
    created = services.endpoint_create(url="https://hooks.example.com/in", actor=ACTOR)
    stored = Endpoint.objects.values_list("secret_encrypted", flat=True).get()
    assert created.secret not in stored and created.secret[6:] not in stored
    assert created.endpoint.created_by == f"{ACTOR.type}:{ACTOR.name}"


def test_overdue_retries_are_queued_again(alpha, receiver, django_capture_on_commit_callbacks):
    services.endpoint_create(url=receiver.url(), actor=ACTOR)
    suspend(alpha, django_capture_on_commit_callbacks)
    delivery = only_delivery()
    django_rq.get_queue("default").empty()
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() - timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.deliveries_requeue_overdue() == 1
    assert django_rq.get_queue("default").count == 1
    # Not yet late: left to its scheduled job.
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() + timedelta(seconds=30))
    assert services.deliveries_requeue_overdue() == 0


def test_old_messages_are_pruned_but_not_while_a_delivery_is_pending(alpha, receiver,
                                                                      django_capture_on_commit_callbacks):
    services.endpoint_create(url=receiver.url(), actor=ACTOR)
    suspend(alpha, django_capture_on_commit_callbacks)
    delivery = only_delivery()
    later = timezone.now() + timedelta(days=31)
    assert services.messages_prune(now=later) == 0  # still pending
    services.delivery_attempt(delivery_id=delivery.pk)
    assert services.messages_prune(now=timezone.now()) == 0  # not old yet
    assert services.messages_prune(now=later) == 3  # the message, its delivery, the attempt
    assert not Message.objects.exists() and not Attempt.objects.exists()


def test_a_delivery_job_also_sends_what_else_is_due(alpha, receiver, django_capture_on_commit_callbacks):
    services.endpoint_create(url=receiver.url(), actor=ACTOR)
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):
            tenant_suspend(tenant=alpha, reason="x", actor=ACTOR)
            tenant_resume(tenant=alpha, actor=ACTOR)
    later = Delivery.objects.order_by("pk").last()
    Delivery.objects.filter(pk=later.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=5))
    assert services.deliveries_send_due(limit=10) == 3
    assert Delivery.objects.filter(status="succeeded").count() == 3 and len(receiver.received) == 3
    assert services.deliveries_send_due() == 0  # nothing due: the one left waits for its time
    assert Delivery.objects.get(pk=later.pk).status == "pending"


def test_change_disable_and_delete_are_audited(alpha, receiver, django_capture_on_commit_callbacks):
    created = services.endpoint_create(url=receiver.url(), tenant=alpha, actor=ACTOR)
    endpoint = created.endpoint
    assert services.endpoint_update(endpoint=endpoint, url=receiver.url("/v2"), events=["tenant.resumed"],
                                    actor=ACTOR).url.endswith("/v2")
    # No change, no audit event.
    services.endpoint_update(endpoint=endpoint, url=receiver.url("/v2"), actor=ACTOR)
    assert AuditEvent.objects.filter(action=Action.WEBHOOK_ENDPOINT_CHANGED).count() == 1
    with pytest.raises(WebhookError, match="Unknown event type"):
        services.endpoint_update(endpoint=endpoint, events=["nope"], actor=ACTOR)
    assert services.endpoint_disable(endpoint=endpoint, reason="maintenance", actor=ACTOR)
    assert not services.endpoint_disable(endpoint=endpoint, reason="again", actor=ACTOR)
    with django_capture_on_commit_callbacks(execute=True):
        tenant_suspend(tenant=alpha, reason="x", actor=ACTOR)
    assert not Delivery.objects.exists()  # a disabled endpoint gets no new deliveries
    services.endpoint_enable(endpoint=endpoint, actor=ACTOR)
    with django_capture_on_commit_callbacks(execute=True):
        tenant_resume(tenant=alpha, actor=ACTOR)
    assert Delivery.objects.count() == 1
    services.endpoint_delete(endpoint=endpoint, actor=ACTOR)
    assert not Endpoint.objects.exists() and not Delivery.objects.exists()
    deleted = AuditEvent.objects.get(action=Action.WEBHOOK_ENDPOINT_DELETED)
    assert deleted.tenant == alpha and deleted.details["owner"] == "alpha"
    assert receiver.received == []  # nothing ran the deliveries


def test_a_deleted_shop_gets_no_endpoint(alpha):
    from tenants.services import tenant_deprovision

    tenant_deprovision(tenant=alpha, drop_schema=False, actor=ACTOR)
    alpha.refresh_from_db()
    with pytest.raises(WebhookError, match="is deleted"):
        services.endpoint_create(url="https://hooks.example.com/in", tenant=alpha, actor=ACTOR)


def test_a_burst_of_events_queues_one_send_job(alpha, receiver, django_capture_on_commit_callbacks):
    services.endpoint_create(url=receiver.url(), actor=ACTOR)
    services.endpoint_create(url=receiver.url("/second"), tenant=alpha, actor=ACTOR)
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(3):
            tenant_suspend(tenant=alpha, reason="x", actor=ACTOR)
            tenant_resume(tenant=alpha, actor=ACTOR)
    queue = django_rq.get_queue("default")
    assert Delivery.objects.count() == 12
    assert [job.func_name for job in queue.jobs] == ["webhooks.jobs.deliveries_send_job"]
    # Once that job has started (and cleared the flag), the next event queues another.
    django_rq.get_connection("default").delete(services.SEND_QUEUED)
    with django_capture_on_commit_callbacks(execute=True):
        tenant_suspend(tenant=alpha, reason="x", actor=ACTOR)
    assert queue.count == 2


def test_the_send_batch_queues_a_successor_when_work_is_left(alpha, receiver,
                                                             django_capture_on_commit_callbacks):
    services.endpoint_create(url=receiver.url(), actor=ACTOR)
    with django_capture_on_commit_callbacks(execute=True):
        tenant_suspend(tenant=alpha, reason="x", actor=ACTOR)
        tenant_resume(tenant=alpha, actor=ACTOR)
    queue = django_rq.get_queue("default")
    queue.empty()
    connection = django_rq.get_connection("default")
    assert connection.get(services.SEND_QUEUED)  # set by the events' kick
    with django_capture_on_commit_callbacks(execute=True):  # django-rq enqueues on commit
        assert services.deliveries_send_batch(limit=1) == 1
    assert queue.count == 1  # one left: a successor is queued (the flag was cleared first)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.deliveries_send_batch() == 1
    assert queue.count == 1  # nothing left: no new successor
    assert len(receiver.received) == 2
