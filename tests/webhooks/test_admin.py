"""The webhook admin: the secret shown once and never again, validation, rotation, deliveries
filtered by status and event, re-send by operators only."""

import re

import pytest

from core import crypto
from core.audit import Action, Actor
from core.models import AuditEvent
from core.roles import OPERATORS, SUPPORT
from tests.staff import admin_client, admin_url, staff_user
from webhooks import services
from webhooks.models import Attempt, Delivery, Endpoint, Message

ACTOR = Actor.command("pytest")
SECRET = re.compile(r'<code class="webhook-secret">(whsec_[A-Za-z0-9+/=]+)</code>')


@pytest.fixture
def operator(db):
    return admin_client(staff_user("olivia", OPERATORS))


@pytest.fixture
def support(db):
    return admin_client(staff_user("sam", SUPPORT))


def test_the_secret_is_shown_once_at_creation_and_never_again(operator, make_tenant):
    shop = make_tenant("alpha")
    page = operator.post(admin_url("admin:webhooks_endpoint_add"), {
        "tenant": str(shop.pk), "url": "https://hooks.alpha.test/in", "description": "alpha's app",
        "events": ["tenant.suspended", "domain.active"], "secret": "",
    })
    assert page.status_code == 200, page.content.decode()[-2000:]
    assert "no-store" in page["Cache-Control"]
    (secret,) = SECRET.findall(page.content.decode())
    endpoint = Endpoint.objects.get()
    assert crypto.secret_decrypt(endpoint.secret_encrypted).decode() == secret
    assert (endpoint.tenant, endpoint.events) == (shop, ["domain.active", "tenant.suspended"])
    assert endpoint.created_by == "staff:olivia"
    for url in (admin_url("admin:webhooks_endpoint_changelist"),
                admin_url("admin:webhooks_endpoint_change", endpoint.pk)):
        assert secret[6:] not in operator.get(url).content.decode()
    assert secret[6:] not in str(list(AuditEvent.objects.values()))
    assert AuditEvent.objects.filter(action=Action.WEBHOOK_ENDPOINT_CREATED, actor="olivia").exists()
    # Editing keeps the owner and the secret.
    change = operator.post(admin_url("admin:webhooks_endpoint_change", endpoint.pk), {
        "url": "https://hooks.alpha.test/v2", "description": "", "events": [],
    })
    assert change.status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.events, endpoint.tenant) == ("https://hooks.alpha.test/v2", [], shop)
    assert crypto.secret_decrypt(endpoint.secret_encrypted).decode() == secret


def test_bad_input_is_shown_on_the_form_and_saves_nothing(operator, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    for fields, says in [
        ({"url": "http://10.0.0.5/hooks"}, "is a private address"),
        ({"url": "https://ok.example.com/", "secret": "whsec_c2hvcnQ="}, "24 to 64 bytes"),
        ({"url": "gopher://example.com/"}, "is not an http(s) URL"),
    ]:
        page = operator.post(admin_url("admin:webhooks_endpoint_add"), {"description": "", **fields})
        assert page.status_code == 200 and says in page.content.decode()
    assert not Endpoint.objects.exists()


def test_rotate_shows_the_new_secret_once(operator):
    created = services.endpoint_create(url="https://hooks.example.com/in", actor=ACTOR)
    page = operator.post(admin_url("admin:webhooks_endpoint_changelist"), {
        "action": "rotate_secret", "_selected_action": [str(created.endpoint.pk)],
    })
    (new,) = SECRET.findall(page.content.decode())
    assert new != created.secret
    endpoint = Endpoint.objects.get()
    assert crypto.secret_decrypt(endpoint.secret_encrypted).decode() == new
    assert crypto.secret_decrypt(endpoint.previous_secret_encrypted).decode() == created.secret


def deliveries(make_tenant):
    shop = make_tenant("beta")
    endpoint = services.endpoint_create(url="https://hooks.beta.test/in", tenant=shop, actor=ACTOR).endpoint
    rows = {}
    for n, (event_type, status) in enumerate(
        [("tenant.suspended", "failed"), ("domain.active", "succeeded"), ("tenant.resumed", "pending")]
    ):
        message = Message.objects.create(id=f"msg_{n}", type=event_type, tenant=shop,
                                         payload={"type": event_type})
        rows[event_type] = Delivery.objects.create(message=message, endpoint=endpoint, event_type=event_type,
                                                   tenant_label="beta", status=status)
    return rows


def test_deliveries_filter_by_status_and_event_and_show_payload(support, make_tenant):
    rows = deliveries(make_tenant)
    changelist = admin_url("admin:webhooks_delivery_changelist")

    def listed(**params) -> list[str]:
        response = support.get(changelist, params)
        assert response.status_code == 200
        return [d.event_type for d in response.context["cl"].result_list]

    assert listed(status__exact="failed") == ["tenant.suspended"]
    assert listed(event_type="domain.active") == ["domain.active"]
    assert sorted(listed()) == ["domain.active", "tenant.resumed", "tenant.suspended"]
    detail = support.get(admin_url("admin:webhooks_delivery_change", rows["domain.active"].pk))
    assert detail.status_code == 200
    assert "{&quot;type&quot;:&quot;domain.active&quot;}" in detail.content.decode()


def test_a_delivery_page_lists_its_attempts_to_everyone_who_may_read_it(operator, support, make_tenant):
    # Attempts have no page and no role of their own: they were hidden from both roles before.
    failed = deliveries(make_tenant)["tenant.suspended"]
    Attempt.objects.create(delivery=failed, number=1, succeeded=False, response_code=503, duration_ms=41.0,
                           response_body="upstream busy", error="HTTP 503")
    for client in (operator, support):
        page = client.get(admin_url("admin:webhooks_delivery_change", failed.pk)).content.decode()
        assert "Attempts" in page and "upstream busy" in page and "HTTP 503" in page
        assert 'name="attempt_rows-0-error"' not in page  # read-only there


def test_resend_is_for_operators_only(operator, support, make_tenant, django_capture_on_commit_callbacks):
    rows = deliveries(make_tenant)
    failed = rows["tenant.suspended"]
    post = {"action": "resend", "_selected_action": [str(failed.pk)]}
    changelist = admin_url("admin:webhooks_delivery_changelist")
    support.post(changelist, post)
    assert Delivery.objects.count() == 3
    assert 'value="resend"' not in support.get(changelist).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(changelist, post)
    assert response.status_code == 302
    again = Delivery.objects.get(resend_of=failed)
    assert (again.status, again.message_id, again.endpoint_id) == ("pending", "msg_0", failed.endpoint_id)
    assert AuditEvent.objects.get(action=Action.WEBHOOK_DELIVERY_RESENT).actor == "olivia"
