"""Shops through the API: idempotent create (at once or as a job), get, list with a cursor and
filters, suspend, resume, change plan (refused with what exceeds), two-step deprovision."""

import uuid

import pytest
from django.db import connection

from core.models import AuditEvent
from storefront.models import Product
from tenants.models import Tenant
from tests.api.conftest import is_problem

pytestmark = pytest.mark.django_db(transaction=True)

NEW = {"subdomain": "acme-shoes", "name": "Acme Shoes", "plan": "growth", "owner_email": "Owner@Acme.example"}


def test_create_is_idempotent_and_a_retried_signup_makes_one_shop(api_server, staff_key, plans):
    key = staff_key()
    api = api_server()
    idem = {"Idempotency-Key": str(uuid.uuid4())}
    first = api.post("/api/v1/tenants", NEW, token=key.token, headers=idem)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["tenant"]["status"] == "active" and body["tenant"]["host"] == "acme-shoes.platform.test"
    assert body["tenant"]["owner_email"] == "owner@acme.example"
    assert "/account/set-password/" in body["owner_set_password_link"]
    assert first.headers["Location"] == body["status_url"] == "/api/v1/tenants/acme-shoes"
    again = api.post("/api/v1/tenants", NEW, token=key.token, headers=idem)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["tenant"] == body["tenant"] and again.json()["owner_set_password_link"] is None
    assert Tenant.objects.filter(subdomain="acme-shoes").count() == 1
    assert AuditEvent.objects.filter(action="tenant.provisioned", target="acme-shoes").count() == 1
    event = AuditEvent.objects.get(action="tenant.provisioned")
    assert event.actor_type == "api_key" and key.key.prefix in event.actor
    # The same key for another request: refused, nothing made.
    other = api.post("/api/v1/tenants", {**NEW, "subdomain": "other-shop"}, token=key.token, headers=idem)
    assert "different request" in is_problem(other, 422)["detail"]
    assert not Tenant.objects.filter(subdomain="other-shop").exists()
    # Without a key: a second create of the same subdomain is refused with the reason.
    taken = api.post("/api/v1/tenants", NEW, token=key.token)
    assert "taken" in is_problem(taken, 422)["detail"]
    # A failed request is not kept: fixed, it goes through under the same Idempotency-Key.
    idem2 = {"Idempotency-Key": "retry-after-fix"}
    bad = api.post("/api/v1/tenants", {**NEW, "subdomain": "x_y"}, token=key.token, headers=idem2)
    assert "a-z" in is_problem(bad, 422)["detail"]
    fixed = api.post("/api/v1/tenants", {**NEW, "subdomain": "x_y"}, token=key.token, headers=idem2)
    assert fixed.status_code == 422  # the same bad body is refused again, not replayed as a success


@pytest.mark.slow  # the real worker builds the shop
def test_create_as_a_job_answers_202_with_a_status_url(api_server, staff_key, plans, run_worker):
    key = staff_key()
    api = api_server()
    queued = api.post("/api/v1/tenants", {**NEW, "subdomain": "later"}, token=key.token,
                      headers={"Prefer": "respond-async", "Idempotency-Key": "k-async"})
    assert queued.status_code == 202, queued.text
    assert queued.json()["tenant"]["status"] == "provisioning"
    status_url = queued.headers["Location"]
    assert api.get(status_url, token=key.token).json()["status"] == "provisioning"
    run_worker()
    assert api.get(status_url, token=key.token).json()["status"] == "active"
    replay = api.post("/api/v1/tenants", {**NEW, "subdomain": "later"}, token=key.token,
                      headers={"Prefer": "respond-async", "Idempotency-Key": "k-async"})
    assert replay.status_code == 202 and Tenant.objects.filter(subdomain="later").count() == 1


def test_list_pages_with_a_cursor_and_filters(api_server, staff_key, make_tenant):
    for name in ("alpha", "bravo", "charlie", "delta"):
        make_tenant(name, plan="growth" if name != "delta" else "starter")
    Tenant.objects.filter(subdomain="bravo").update(status="suspended")
    api = api_server()
    token = staff_key(["tenants:read"]).token
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/tenants", token=token, params=params)
        assert page.status_code == 200, page.text
        seen += [t["subdomain"] for t in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == ["alpha", "bravo", "charlie", "delta"]
    active = api.get("/api/v1/tenants", token=token, params={"status": "active", "plan": "growth"}).json()
    assert [t["subdomain"] for t in active["items"]] == ["alpha", "charlie"]
    bad = is_problem(api.get("/api/v1/tenants", token=token, params={"cursor": "%%%"}), 422)
    assert bad["errors"][0]["field"] == "cursor"
    bad = is_problem(api.get("/api/v1/tenants", token=token, params={"status": "sleeping"}), 422)
    assert bad["errors"][0]["field"] == "status" and "active" in bad["errors"][0]["message"]
    zero = is_problem(api.get("/api/v1/tenants", token=token, params={"limit": 0}), 422)
    assert zero["errors"][0]["field"] == "limit"
    is_problem(api.get("/api/v1/tenants/nobody-here", token=token), 404)


@pytest.mark.slow  # the real worker deprovisions (with a final backup)
def test_suspend_resume_change_plan_and_deprovision_in_two_steps(api_server, staff_key, make_tenant,
                                                                  run_worker):
    acme = make_tenant("acme")
    connection.set_tenant(acme)
    try:
        Product.objects.bulk_create([Product(name=f"p{i}", price="1.00") for i in range(4)])
    finally:
        connection.set_schema_to_public()
    api = api_server()
    token = staff_key().token
    is_problem(api.post("/api/v1/tenants/acme/suspend", {"reason": ""}, token=token), 422)
    suspended = api.post("/api/v1/tenants/acme/suspend", {"reason": "unpaid invoice"}, token=token)
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    assert suspended.json()["status_reason"] == "unpaid invoice"
    twice = api.post("/api/v1/tenants/acme/suspend", {"reason": "x"}, token=token)
    assert "Cannot suspend" in is_problem(twice, 409)["detail"]
    assert api.post("/api/v1/tenants/acme/resume", token=token).json()["status"] == "active"

    refused = is_problem(api.post("/api/v1/tenants/acme/plan", {"plan": "starter"}, token=token), 409)
    assert "4 products (plan allows 3)" in refused["detail"]
    assert refused["type"].endswith("plan-limit-exceeded")
    gold = api.post("/api/v1/tenants/acme/plan", {"plan": "gold"}, token=token)
    assert "Unknown plan" in is_problem(gold, 422)["detail"]
    assert api.get("/api/v1/tenants/acme", token=token).json()["plan"] == "growth"

    step1 = api.post("/api/v1/tenants/acme/deprovision", {"drop_schema": True}, token=token)
    assert step1.status_code == 200, step1.text
    plan = step1.json()
    assert any("4 products" in line for line in plan["will_remove"])
    wrong = api.post(plan["confirm_url"], {"confirmation_token": plan["confirmation_token"],
                                           "confirm_subdomain": "acme-typo"}, token=token)
    assert "must be 'acme'" in is_problem(wrong, 422)["detail"]
    forged = api.post(plan["confirm_url"], {"confirmation_token": plan["confirmation_token"] + "x",
                                            "confirm_subdomain": "acme"}, token=token)
    assert "invalid" in is_problem(forged, 422)["detail"]
    assert Tenant.objects.get(subdomain="acme").status == "active"
    done = api.post(plan["confirm_url"], {"confirmation_token": plan["confirmation_token"],
                                          "confirm_subdomain": "acme"}, token=token)
    assert done.status_code == 202, done.text
    run_worker()
    assert api.get("/api/v1/tenants/acme", token=token).json()["status"] == "deleted"
    actors = set(AuditEvent.objects.filter(tenant__subdomain="acme", action__in=[
        "tenant.suspended", "tenant.resumed", "tenant.deprovisioned"]).values_list("actor", flat=True))
    assert len(actors) == 2 and all("key plt_" in a for a in actors)  # directly, and via its job
