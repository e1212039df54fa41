"""Webhook endpoints through the API (the real gunicorn server): registered per key, a signed
delivery received on a local receiver, each key and each shop seeing only its own endpoints."""

import pytest

from api.services import apikey_revoke
from core.models import AuditEvent
from tests.api.conftest import is_problem
from tests.conftest import TEST_ACTOR
from tests.webhooks.receiver import spec_verify
from webhooks.models import Delivery, Endpoint

pytestmark = pytest.mark.django_db(transaction=True)

LOOPBACK = {"OUTBOUND_ALLOWED_NETWORKS": "127.0.0.1/32"}  # the receiver is on loopback
WEBHOOKS = ["webhooks:read", "webhooks:write"]
SHOP_ALL = ("domains:read", "domains:write", *WEBHOOKS)


@pytest.mark.slow  # the real RQ worker, twice
def test_a_staff_key_registers_an_endpoint_and_receives_signed_deliveries(
    api_server, staff_key, make_tenant, receiver, webhook_worker
):
    make_tenant("acme")
    api = api_server(**LOOPBACK)
    key = staff_key(["tenants:write", *WEBHOOKS])
    made = api.post("/api/v1/webhooks", {"url": receiver.url("/ours"), "events": ["tenant.suspended"],
                                         "description": "billing"}, token=key.token)
    assert made.status_code == 201, made.text
    created = made.json()
    assert created["secret"].startswith("whsec_") and created["tenant"] is None
    assert created["events"] == ["tenant.suspended"] and created["enabled"] is True
    endpoint = Endpoint.objects.get(pk=created["id"])
    assert endpoint.api_key_id == key.key.pk and created["secret"] not in endpoint.secret_encrypted
    # The secret is shown once: never in a read.
    listed = api.get("/api/v1/webhooks", token=key.token).json()["items"]
    assert [e["id"] for e in listed] == [created["id"]] and "secret" not in listed[0]
    assert "secret" not in api.get(f"/api/v1/webhooks/{created['id']}", token=key.token).json()

    suspended = api.post("/api/v1/tenants/acme/suspend", {"reason": "unpaid"}, token=key.token)
    assert suspended.status_code == 200, suspended.text
    webhook_worker()
    (got,) = receiver.at("/ours")
    assert spec_verify(created["secret"], got) and got.json["type"] == "tenant.suspended"
    page = api.get(f"/api/v1/webhooks/{created['id']}/deliveries", token=key.token).json()
    (delivery,) = page["items"]
    assert (delivery["status"], delivery["attempts"], delivery["response_code"]) == ("succeeded", 1, 204)
    assert delivery["message_id"] == got.headers["webhook-id"] and page["next_cursor"] is None

    # Re-send: a new delivery of the same message (same webhook-id), signed with a rotated secret.
    rotated = api.post(f"/api/v1/webhooks/{created['id']}/rotate-secret", token=key.token).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    again = api.post(f"/api/v1/webhooks/{created['id']}/deliveries/{delivery['id']}/resend", token=key.token)
    assert again.status_code == 202 and again.json()["resend_of"] == delivery["id"], again.text
    webhook_worker()
    first, second = receiver.at("/ours")
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert spec_verify(rotated["secret"], second) and spec_verify(created["secret"], second)  # grace
    only_new = api.get(f"/api/v1/webhooks/{created['id']}/deliveries?limit=1", token=key.token).json()
    assert [d["id"] for d in only_new["items"]] == [again.json()["id"]]
    older = api.get(f"/api/v1/webhooks/{created['id']}/deliveries?cursor={only_new['next_cursor']}",
                    token=key.token).json()
    assert [d["id"] for d in older["items"]] == [delivery["id"]]

    # Change it, turn it off (a re-send is then refused with what to do), delete it.
    changed = api.call("PATCH", f"/api/v1/webhooks/{created['id']}", token=key.token,
                       json={"events": [], "enabled": False})
    assert changed.status_code == 200 and changed.json()["events"] == [] and not changed.json()["enabled"]
    refused = api.post(f"/api/v1/webhooks/{created['id']}/deliveries/{delivery['id']}/resend",
                       token=key.token)
    assert "enable it first" in is_problem(refused, 422)["detail"]
    assert api.delete(f"/api/v1/webhooks/{created['id']}", token=key.token).status_code == 204
    is_problem(api.get(f"/api/v1/webhooks/{created['id']}", token=key.token), 404)
    actions = set(AuditEvent.objects.filter(actor_type="api_key", action__startswith="webhook_")
                  .values_list("action", flat=True))
    assert {"webhook_endpoint.created", "webhook_endpoint.secret_rotated", "webhook_delivery.resent",
            "webhook_endpoint.changed", "webhook_endpoint.disabled",
            "webhook_endpoint.deleted"} <= actions, actions


def test_bad_endpoints_are_problems_that_say_what_to_fix(api_server, staff_key, make_tenant):
    api = api_server()  # loopback not allowed here
    token = staff_key(WEBHOOKS).token
    cases = [
        ({"url": "ftp://example.com/hooks"}, "http(s) URL"),
        ({"url": "http://10.1.2.3/hooks"}, "private"),
        ({"url": "http://127.0.0.1:9/hooks"}, "loopback"),
        ({"url": "https://user:pw@example.com/hooks"}, "no credentials"),
        ({"url": "https://example.com/hooks", "events": ["tenant.nope"]}, "Unknown event type"),
        ({"url": "https://example.com/hooks", "tenant": "no-such-shop"}, "no-such-shop"),
        ({"events": []}, "url"),
        ({"url": "https://example.com/hooks", "description": "a\x00b"}, "description"),
    ]
    for payload, says in cases:
        answer = api.post("/api/v1/webhooks", payload, token=token)
        assert says in is_problem(answer, 422)["detail"], (payload, answer.text)
    is_problem(api.get("/api/v1/webhooks/abc", token=token), 422)
    is_problem(api.get("/api/v1/webhooks/1/deliveries?status=lost", token=token), 422)
    assert not Endpoint.objects.exists()


@pytest.mark.slow  # the real RQ worker
def test_keys_see_only_their_own_endpoints_and_need_the_scope(
    api_server, staff_key, shop_key, make_tenant, receiver, webhook_worker
):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    api = api_server(**LOOPBACK)
    acme_key, globex_key = shop_key(acme, scopes=SHOP_ALL), shop_key(globex, scopes=SHOP_ALL)
    acme_api = api.on("acme.platform.test", acme_key.token)
    globex_api = api.on("globex.platform.test", globex_key.token)
    made = acme_api.post("/api/shop/v1/webhooks", {"url": receiver.url("/acme"), "tenant": "globex"})
    assert made.status_code == 201, made.text
    ours = made.json()
    assert ours["tenant"] == "acme" and ours["secret"].startswith("whsec_")  # its own shop, whatever it says
    assert Endpoint.objects.get(pk=ours["id"]).tenant_id == acme.pk
    theirs = globex_api.post("/api/shop/v1/webhooks", {"url": receiver.url("/globex")}).json()

    # Another shop's endpoint: 404 on every operation, never listed.
    one = f"/api/shop/v1/webhooks/{theirs['id']}"
    for method, path, body in [("GET", one, None), ("PATCH", one, {"enabled": False}), ("DELETE", one, None),
                               ("POST", one + "/rotate-secret", None), ("GET", one + "/deliveries", None),
                               ("POST", one + "/deliveries/1/resend", None)]:
        is_problem(acme_api.call(method, path, json=body), 404)
    assert [e["id"] for e in acme_api.get("/api/shop/v1/webhooks").json()["items"]] == [ours["id"]]
    assert Endpoint.objects.get(pk=theirs["id"]).enabled
    # Another key, even a staff key with every webhook scope: not its endpoint.
    staff = staff_key(WEBHOOKS).token
    is_problem(api.get(f"/api/v1/webhooks/{ours['id']}", token=staff), 404)
    assert api.get("/api/v1/webhooks", token=staff).json()["items"] == []
    # Its own key on the other shop's host: no key at all there.
    is_problem(api.on("globex.platform.test", acme_key.token).get("/api/shop/v1/webhooks"), 401)
    # Without the scope: 403 naming it (a shop key made for domains only; a staff read-only key).
    domains_only = shop_key(acme)
    body = is_problem(api.on("acme.platform.test", domains_only.token).get("/api/shop/v1/webhooks"), 403)
    assert "webhooks:read" in body["detail"]
    reader = staff_key(["webhooks:read"]).token
    body = is_problem(api.post("/api/v1/webhooks", {"url": "https://example.com/h"}, token=reader), 403)
    assert "webhooks:write" in body["detail"]

    # Each shop's endpoint hears its own shop's events only.
    assert acme_api.post("/api/shop/v1/domains", {"domain": "shop.acme-example.test"}).status_code == 201
    webhook_worker()
    (got,) = receiver.at("/acme")
    assert spec_verify(ours["secret"], got) and got.json["data"]["tenant"]["subdomain"] == "acme"
    assert receiver.at("/globex") == []


def test_a_revoked_keys_endpoints_stop_receiving(staff_key, make_tenant, shop_key):
    from webhooks import services

    key = staff_key(WEBHOOKS)
    other = staff_key(WEBHOOKS, name="other")
    mine = services.endpoint_create(url="https://example.com/a", actor=TEST_ACTOR, api_key=key.key)
    kept = services.endpoint_create(url="https://example.com/b", actor=TEST_ACTOR, api_key=other.key)
    apikey_revoke(key=key.key, actor=TEST_ACTOR)
    mine.endpoint.refresh_from_db()
    kept.endpoint.refresh_from_db()
    assert not mine.endpoint.enabled and key.key.prefix in mine.endpoint.disabled_reason
    assert kept.endpoint.enabled
    assert AuditEvent.objects.filter(action="webhook_endpoint.disabled", target="https://example.com/a").exists()
    assert not Delivery.objects.exists()
    # Revoking twice changes nothing more.
    apikey_revoke(key=key.key, actor=TEST_ACTOR)
    assert AuditEvent.objects.filter(action="webhook_endpoint.disabled").count() == 1
