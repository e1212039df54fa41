"""Every call a key makes is audited with the key as the actor: reads (GET) as `api.read` (method,
path, status), written once the answer is known, through the real gunicorn; never a webhook."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.audit import Action
from core.models import AuditEvent
from tests.api.conftest import ADMIN_HOST, is_problem
from webhooks.events import MAPPED_ACTIONS, event_type_for

pytestmark = pytest.mark.django_db(transaction=True)


def reads():
    return AuditEvent.objects.filter(action="api.read").order_by("pk")


def test_reads_are_audited_with_the_key_method_path_and_status(api_server, staff_key, shop_key, make_tenant):
    acme = make_tenant("acme")
    api = api_server()
    reader = staff_key(["tenants:read", "tenants:write"], name="dashboard")
    before = AuditEvent.objects.count()

    assert api.get("/api/v1/tenants/acme", token=reader.token).status_code == 200
    is_problem(api.get("/api/v1/tenants/nope", token=reader.token), 404)
    (found, missing) = reads()
    assert (found.actor_type, found.actor) == ("api_key", f"key {reader.key.prefix} (dashboard)")
    assert (found.target, found.details) == ("/api/v1/tenants/acme", {"method": "GET", "status": 200})
    assert (missing.target, missing.details) == ("/api/v1/tenants/nope", {"method": "GET", "status": 404})
    assert found.tenant_id is None  # a staff key's read names the shop in its path, without a lookup

    # A read refused for a missing scope is audited once, as the refusal (not also as a read).
    is_problem(api.get("/api/v1/tenants/acme/backups", token=reader.token), 403)
    assert reads().count() == 2
    denied = AuditEvent.objects.filter(action="api.access_denied", target="/api/v1/tenants/acme/backups")
    assert denied.count() == 1
    # A change is audited by its service (tenant.suspended with the key), not as a read.
    suspended = api.post("/api/v1/tenants/acme/suspend", {"reason": "unpaid"}, token=reader.token)
    assert suspended.status_code == 200, suspended.text
    assert AuditEvent.objects.filter(action="tenant.suspended", actor=found.actor).count() == 1
    assert reads().count() == 2
    # No key, or a bad one: nothing to name as the actor; the 401 is not a read by anyone.
    is_problem(api.get("/api/v1/tenants/acme", token="plt_nothing_x"), 401)
    assert reads().count() == 2
    assert AuditEvent.objects.count() == before + 4  # 2 reads, the refusal, the suspension

    # A shop key's reads carry its shop.
    owner = shop_key(make_tenant("globex"))
    assert api.on("globex.platform.test", owner.token).get("/api/shop/v1/domains").status_code == 200
    last = reads().last()
    assert last.actor == f"key {owner.key.prefix} (owner's app)" and last.tenant_label == "globex"
    assert (last.target, last.details) == ("/api/shop/v1/domains", {"method": "GET", "status": 200})
    assert acme.pk != last.tenant_id


def test_a_read_costs_one_insert_and_is_never_a_webhook(api_settings, staff_key, make_tenant, client):
    make_tenant("acme")
    token = staff_key(["tenants:read"]).token
    with CaptureQueriesContext(connection) as queries:
        answer = client.get("/api/v1/tenants/acme", HTTP_HOST=ADMIN_HOST,
                            HTTP_AUTHORIZATION=f"Bearer {token}")
    assert answer.status_code == 200, answer.content
    audit = [q["sql"] for q in queries.captured_queries if "tenants_auditevent" in q["sql"]]
    # One statement (django-tenants sends its search_path in the same round trip).
    assert len(audit) == 1 and 'INSERT INTO "tenants_auditevent"' in audit[0], audit
    # The insert comes last: after the answer (and its status) was made.
    assert queries.captured_queries[-1]["sql"] == audit[0]
    assert Action.API_READ not in MAPPED_ACTIONS and event_type_for(reads().get()) is None
