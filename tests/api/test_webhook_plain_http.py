"""Webhook endpoint URLs: plain http:// is refused (422, saying what to do) unless every address
of the host is in OUTBOUND_ALLOWED_NETWORKS (test and private deployments); checked again at
every delivery."""

import pytest
from django.utils import timezone

from core.audit import Actor
from tests.api.conftest import is_problem
from webhooks import services
from webhooks.errors import WebhookError
from webhooks.models import Delivery, Message
from webhooks.services.deliveries import delivery_attempt

pytestmark = pytest.mark.django_db(transaction=True)
ACTOR = Actor.command("pytest")


def test_plain_http_is_refused_outside_the_allowed_networks(api_server, staff_key):
    key = staff_key(["webhooks:read", "webhooks:write"])
    # This server allows 10.20.0.0/16 (a private deployment's network), nothing else.
    api = api_server(OUTBOUND_ALLOWED_NETWORKS="10.20.0.0/16")
    for url in ("http://hooks.example.com/in", "http://93.184.215.14/in"):
        refused = is_problem(api.post("/api/v1/webhooks", {"url": url}, token=key.token), 422)
        assert refused["type"].endswith("/webhook-refused"), refused
        assert "is plain http://: use https://" in refused["detail"], refused
        assert "OUTBOUND_ALLOWED_NETWORKS" in refused["detail"]
    # A private address outside the allowed network: refused for what it is, before the scheme.
    assert "is a private address" in is_problem(
        api.post("/api/v1/webhooks", {"url": "http://10.30.0.5/in"}, token=key.token), 422)["detail"]
    # Inside the allowed network, plain http is the operator's choice; https is accepted anywhere.
    for url in ("http://10.20.0.5:8080/in", "https://hooks.example.com/in"):
        made = api.post("/api/v1/webhooks", {"url": url}, token=key.token)
        assert made.status_code == 201, made.text
    # Changing an endpoint's URL follows the same rule.
    endpoint_id = made.json()["id"]
    changed = api.call("PATCH", f"/api/v1/webhooks/{endpoint_id}",
                       json={"url": "http://hooks.example.com/x"}, token=key.token)
    assert "is plain http://" in is_problem(changed, 422)["detail"]


def test_names_must_resolve_inside_the_allowed_networks_and_deliveries_check_again(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    # localhost and the loopback address: inside the allowed network; a name that resolves to
    # nothing (or to anything outside it): refused.
    services.endpoint_validate(url="http://localhost:9/in", events=None)
    services.endpoint_validate(url="http://127.0.0.1:9/in", events=None)
    with pytest.raises(WebhookError, match="is plain http://: use https://"):
        services.endpoint_validate(url="http://example.invalid/in", events=None)  # does not resolve

    # Saved while its (public) network was allowed; the setting changes: the delivery is not sent
    # in clear, and says why (nothing is sent anywhere: the check comes before any connection).
    settings.OUTBOUND_ALLOWED_NETWORKS = ["93.184.215.0/24"]
    endpoint = services.endpoint_create(url="http://93.184.215.14:9/in", actor=ACTOR).endpoint
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    Message.objects.create(id="msg_plain", type="tenant.suspended", payload={"type": "tenant.suspended"})
    delivery = Delivery.objects.create(message_id="msg_plain", endpoint=endpoint,
                                       event_type="tenant.suspended",
                                       next_attempt_at=timezone.now())
    attempted = delivery_attempt(delivery_id=delivery.pk)
    assert attempted is not None and attempted.attempts == 1
    assert attempted.last_error.startswith("not sent: 'http://93.184.215.14:9/in' is plain http://")
