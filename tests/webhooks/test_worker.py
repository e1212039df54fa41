"""The real RQ worker (a separate process) delivers, retries on RQ's scheduler, keeps shops apart."""

import time

import pytest
from django.utils import timezone
from standardwebhooks import Webhook

from core.audit import Actor
from tenants.services import tenant_suspend
from tests.webhooks.receiver import spec_verify
from webhooks import services
from webhooks.models import Attempt, Delivery

ACTOR = Actor.command("pytest")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_worker_delivers_retries_and_keeps_shops_apart(make_tenant, receiver, webhook_worker):
    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    platform = services.endpoint_create(url=receiver.url("/platform"), actor=ACTOR)
    alphas = services.endpoint_create(url=receiver.url("/alpha"), tenant=alpha, actor=ACTOR)
    services.endpoint_create(url=receiver.url("/beta"), tenant=beta, actor=ACTOR)
    # alpha's receiver fails once with a 500, then is too slow once (the worker's deadline is 1 s).
    receiver.script["/alpha"] = [500, ("sleep", 3)]
    tenant_suspend(tenant=alpha, reason="unpaid invoice", actor=ACTOR)

    webhook_worker()
    (to_platform,) = receiver.at("/platform")
    assert spec_verify(platform.secret, to_platform)
    body = Webhook(platform.secret).verify(to_platform.body, to_platform.headers)
    assert body["type"] == "tenant.suspended"
    assert receiver.at("/beta") == []  # beta's endpoint never hears about alpha
    delivery = Delivery.objects.get(endpoint=alphas.endpoint)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("pending", 1, 500)

    for _ in range(4):  # bounded: two retries are needed
        delivery.refresh_from_db()
        if delivery.status != Delivery.Status.PENDING:
            break
        time.sleep(max(0.0, (delivery.next_attempt_at - timezone.now()).total_seconds()) + 1.1)
        webhook_worker()
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SUCCEEDED
    outcomes = list(Attempt.objects.filter(delivery=delivery).values_list("response_code", "error"))
    assert outcomes == [(500, "HTTP 500"), (None, "timed out after 1 s"), (204, "")]
    got = receiver.at("/alpha")
    assert len(got) == 3 and len({r.headers["webhook-id"] for r in got}) == 1
    assert all(spec_verify(alphas.secret, r) for r in got)
    assert not spec_verify(platform.secret, got[-1])  # each endpoint has its own secret
    assert receiver.at("/beta") == []
