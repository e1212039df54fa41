"""Every staff endpoint needs its one scope; every refusal is a problem; shop keys stay in their shop.

The endpoints and the scope each needs are read from the code (the ninja operations), so a new
endpoint is tried here without anyone listing it.
"""

import re
import time

import pytest

from api.apis import ShopKey, StaffKey, shop_api, staff_api
from api.models import SCOPES, APIKey
from api.services import apikey_revoke
from core.models import AuditEvent
from tenants.models import Tenant
from tenants.routing import routes_forget
from tests.api.conftest import ALL_SCOPES, expired_key, is_problem
from tests.conftest import TEST_ACTOR

pytestmark = pytest.mark.django_db(transaction=True)

PARAMS = {"subdomain": "acme", "domain": "shop.example.test",
          "backup_id": "6b3c4a4e-0000-4000-8000-000000000001",
          "export_id": "6b3c4a4e-0000-4000-8000-000000000002", "deployment_id": "1", "version": "1.0.0",
          "webhook_id": "1", "delivery_id": "1"}


def operations(ninja_api, prefix: str):
    """(method, path, scope) of every operation; the scope is None for the unauthenticated ones."""
    import api.urls  # noqa: F401 - mounts the routers

    found = []
    for router_prefix, router in ninja_api._routers:
        for route, path_view in router.path_operations.items():
            for op in path_view.operations:
                auth = [a for a in (op.auth_callbacks or []) if isinstance(a, StaffKey | ShopKey)]
                scope = auth[0].scope if auth else None
                path = re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], f"{prefix}{router_prefix}{route}")
                for method in op.methods:
                    found.append((method, path.replace("//", "/"), scope))
    return found


def test_every_endpoint_names_one_known_scope():
    staff_ops = operations(staff_api, "/api")
    assert len(staff_ops) >= 25
    unauthenticated = [(m, p) for m, p, scope in staff_ops if scope is None]
    # Only the export file: its signed, short-lived token is the credential.
    assert unauthenticated == [("GET", f"/api/v1/exports/{PARAMS['export_id']}/file")]
    assert {scope for *_, scope in staff_ops if scope} <= set(SCOPES)
    assert {scope for *_, scope in operations(shop_api, "/api/shop")} == {
        "domains:read", "domains:write", "webhooks:read", "webhooks:write"}


def test_each_scope_is_enforced_on_every_endpoint(api_server, staff_key, make_tenant):
    make_tenant("acme")
    api = api_server()
    keys = {scope: staff_key([s for s in ALL_SCOPES if s != scope], name=f"all but {scope}")
            for scope in SCOPES}
    revoked = staff_key(ALL_SCOPES, name="revoked")
    apikey_revoke(key=revoked.key, actor=TEST_ACTOR)
    expired = expired_key(lambda **kw: staff_key(ALL_SCOPES, name="expired", **kw))
    checked = 0
    for method, path, scope in operations(staff_api, "/api"):
        if scope is None:
            continue
        # No key, a bad key, a revoked or expired key: 401, with the header that says how.
        for token in (None, "plt_nothing_x", revoked.token, expired.token):
            body = is_problem(api.call(method, path, token=token, json={}), 401)
            assert "Authorization: Bearer" in body["detail"]
        # Every scope but the one it needs: 403, naming the scope, audited with the key.
        refused = api.call(method, path, token=keys[scope].token, json={})
        assert scope in is_problem(refused, 403)["detail"], (method, path)
        checked += 1
    assert checked >= 25
    denied = AuditEvent.objects.filter(action="api.access_denied", actor_type="api_key")
    assert denied.count() == checked
    assert set(denied.values_list("details__scope", flat=True)) == set(SCOPES)


def test_keys_are_shown_once_stored_hashed_and_used_keys_are_dated(api_server, staff_key, make_tenant):
    make_tenant("acme")
    new = staff_key(["tenants:read"])
    stored = APIKey.objects.get(pk=new.key.pk)
    assert new.token.startswith(stored.prefix + "_") and stored.prefix.startswith("plt_")
    assert new.token not in str(stored.__dict__) and len(stored.token_sha256) == 64
    assert stored.last_used_at is None
    api = api_server()
    assert api.get("/api/v1/tenants/acme", token=new.token).status_code == 200
    stored.refresh_from_db()
    assert stored.last_used_at is not None
    assert AuditEvent.objects.filter(action="api_key.created", target=str(stored)).exists()


def test_a_shop_key_never_reaches_another_shop_or_the_staff_api(api_server, shop_key, make_tenant, staff_key):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    api = api_server(TENANT_ROUTE_LOCAL_SECONDS="0")  # a suspension below is seen at once
    acme_key, globex_key = shop_key(acme), shop_key(globex)
    acme_api = api.on("acme.platform.test", acme_key.token)
    assert acme_api.get("/api/shop/v1/domains").status_code == 200
    added = acme_api.post("/api/shop/v1/domains", {"domain": "shop.acme-example.test"})
    assert added.status_code == 201, added.text
    globex_api = api.on("globex.platform.test", globex_key.token)
    assert globex_api.post("/api/shop/v1/domains", {"domain": "shop.globex-example.test"}).status_code == 201

    # Its own shop's key on another shop's host: 401, as if the key did not exist.
    for path in ("/api/shop/v1/domains", "/api/shop/v1/usage",
                 "/api/shop/v1/domains/shop.globex-example.test"):
        is_problem(api.on("globex.platform.test", acme_key.token).get(path), 401)
    # Another shop's domain through its own host: 404 (never a 403 that confirms it exists).
    is_problem(acme_api.get("/api/shop/v1/domains/shop.globex-example.test"), 404)
    is_problem(acme_api.delete("/api/shop/v1/domains/shop.globex-example.test"), 404)
    is_problem(acme_api.post("/api/shop/v1/domains/shop.globex-example.test/check"), 404)
    listed = acme_api.get("/api/shop/v1/domains").json()
    assert {d["domain"] for d in listed["items"]} == {"acme.platform.test", "shop.acme-example.test"}
    # On the control plane's host a shop key is no key at all; staff paths do not exist on shop hosts.
    is_problem(api.get("/api/v1/tenants/acme", token=acme_key.token), 401)
    for path in ("/api/v1/tenants", "/api/v1/tenants/acme", "/api/schema/", "/api/docs/"):
        is_problem(acme_api.get(path), 404)
    # A staff key on a shop host: 401 (the shop API takes only that shop's keys).
    is_problem(acme_api.get("/api/shop/v1/domains", token=staff_key().token), 401)
    # A read-only shop key cannot write.
    reader = shop_key(acme, scopes=("domains:read",))
    body = is_problem(api.on("acme.platform.test", reader.token).post(
        "/api/shop/v1/domains", {"domain": "two.acme-example.test"}), 403)
    assert "domains:write" in body["detail"]
    # Its own domain: check (a job), primary (only when active), remove.
    assert acme_api.post("/api/shop/v1/domains/shop.acme-example.test/check").status_code == 202
    primary = acme_api.post("/api/shop/v1/domains/shop.acme-example.test/primary")
    assert "only an active domain" in is_problem(primary, 409)["detail"]
    got = acme_api.get("/api/shop/v1/domains/shop.acme-example.test").json()
    assert got["checking"] is True and got["dns_records"][0]["name"].startswith("_platform-verify.")
    usage = acme_api.get("/api/shop/v1/usage").json()
    assert usage["subdomain"] == "acme" and usage["usage"]["custom_domains"] == 1
    event = AuditEvent.objects.get(action="domain.added", target="shop.acme-example.test")
    assert event.actor_type == "api_key" and acme_key.key.prefix in event.actor
    assert acme_api.delete("/api/shop/v1/domains/shop.acme-example.test").status_code == 204
    assert acme_api.get("/api/shop/v1/usage").json()["usage"]["custom_domains"] == 0
    # A suspended shop's API answers 503, as a problem too.
    Tenant.objects.get(subdomain="globex").set_status("suspended", "unpaid")
    routes_forget("globex.platform.test")
    is_problem(globex_api.get("/api/shop/v1/domains"), 503)


def test_rate_limit_per_key_answers_429_with_retry_after(api_server, staff_key, make_tenant):
    make_tenant("acme")
    api = api_server(API_RATE_LIMIT_PER_MINUTE="3")
    key, other = staff_key(["tenants:read"]), staff_key(["tenants:read"], name="other")
    # The limit counts per wall-clock minute: start early in one, so the five calls share it.
    if time.time() % 60 > 40:
        time.sleep(61 - time.time() % 60)
    answers = [api.get("/api/v1/tenants/acme", token=key.token) for _ in range(5)]
    assert [r.status_code for r in answers[:3]] == [200, 200, 200]
    body = is_problem(answers[3], 429)
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 60 and "3 requests a minute" in body["detail"]
    # Per key: another key still gets through.
    assert api.get("/api/v1/tenants/acme", token=other.token).status_code == 200
