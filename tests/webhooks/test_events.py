"""Which audited changes become which webhook events, their payloads, and who receives them."""

from datetime import timedelta

import pytest
from django.utils import timezone

from backups.models import Backup
from backups.services._common import mark_failed
from core.audit import Action, Actor, audit_record
from deployments.models import Deployment, Environment, Release, Target
from tenants.domains.services import domain_add
from tenants.models import Certificate, Domain
from tenants.services import tenant_change_plan, tenant_deprovision, tenant_resume, tenant_suspend
from webhooks import services
from webhooks.events import EVENT_TYPES, SHOP_REASON
from webhooks.models import Delivery, Endpoint, Message
from webhooks.selectors import deliveries_for

ACTOR = Actor.command("pytest")


def data(event_type: str) -> dict:
    return Message.objects.get(type=event_type).payload["data"]


@pytest.fixture
def everything(db):
    """A platform endpoint that hears every event (no worker runs: messages are only recorded)."""
    return services.endpoint_create(url="https://hooks.example.com/all", actor=ACTOR).endpoint


def test_shop_lifecycle_events(everything, make_tenant, plans, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        shop = make_tenant("gamma")
    assert data("tenant.provisioned")["tenant"]["status"] == "active"
    assert data("tenant.provisioned")["host"] == "gamma.localhost"
    with django_capture_on_commit_callbacks(execute=True):
        tenant_suspend(tenant=shop, reason="chargeback", actor=ACTOR)
    with django_capture_on_commit_callbacks(execute=True):
        tenant_resume(tenant=shop, actor=ACTOR)
    with django_capture_on_commit_callbacks(execute=True):
        tenant_change_plan(tenant=shop, plan="starter", actor=ACTOR)
    with django_capture_on_commit_callbacks(execute=True):
        tenant_deprovision(tenant=shop, drop_schema=False, actor=ACTOR)
    assert data("tenant.suspended")["reason"] == "chargeback"
    assert data("tenant.resumed")["tenant"]["subdomain"] == "gamma"
    assert (data("tenant.plan_changed")["from"], data("tenant.plan_changed")["to"]) == ("growth", "starter")
    assert data("tenant.deprovisioned")["data_deleted"] is False
    assert data("tenant.deprovisioned")["tenant"]["status"] == "deleted"
    # Internal names stay out of payloads a shop's own endpoint also gets.
    assert "schema" not in str(Message.objects.get(type="tenant.provisioned").payload)
    assert Delivery.objects.filter(endpoint=everything).count() == 5
    assert all(m.audit_event_id for m in Message.objects.all())


def test_domain_and_certificate_events(everything, make_tenant, django_capture_on_commit_callbacks):
    shop = make_tenant("delta")
    with django_capture_on_commit_callbacks(execute=True):
        domain = domain_add(tenant=shop, domain="shop.delta.test", actor=ACTOR)
    assert data("domain.added")["domain"]["status"] == "pending_verification"
    for action, status in [
        (Action.DOMAIN_VERIFICATION_FAILED, Domain.Status.VERIFICATION_FAILED),
        (Action.DOMAIN_VERIFIED, Domain.Status.CERTIFICATE_PENDING),
        (Action.DOMAIN_ACTIVATED, Domain.Status.ACTIVE),
    ]:
        Domain.objects.filter(pk=domain.pk).update(status=status, status_reason=f"now {status}")
        problems = ["no TXT record at _platform-challenge.shop.delta.test"]
        details = {"problems": problems} if "fail" in action else {}
        with django_capture_on_commit_callbacks(execute=True):
            audit_record(actor=ACTOR, action=action, tenant=shop, target=domain.domain, details=details)
    failed = data("domain.failed")
    assert failed["stage"] == "verification" and failed["problems"][0].startswith("no TXT record")
    assert failed["domain"]["status"] == "verification_failed"
    assert data("domain.verified")["domain"]["status"] == "certificate_pending"
    active = data("domain.active")["domain"]
    assert active["name"] == "shop.delta.test" and active["status"] == "active"
    # certificate.expiring: once per certificate, within WEBHOOK_CERTIFICATE_EXPIRING_DAYS.
    not_after = timezone.now() + timedelta(days=9)
    Certificate.objects.create(domain=domain, status=Certificate.Status.ISSUED, not_after=not_after,
                               serial="ab12")
    assert services.certificates_expiring_emit() == 1
    assert services.certificates_expiring_emit() == 0
    expiring = data("certificate.expiring")
    assert expiring["certificate"]["days_left"] == 8 and expiring["certificate"]["serial"] == "ab12"
    assert expiring["tenant"]["subdomain"] == "delta"
    # Renewed (a new expiry): told again when that one comes close.
    Certificate.objects.update(not_after=not_after + timedelta(days=1))
    assert services.certificates_expiring_emit() == 1
    Certificate.objects.update(not_after=timezone.now() + timedelta(days=60))
    assert services.certificates_expiring_emit() == 0


def test_backup_and_deployment_events(everything, make_tenant, django_capture_on_commit_callbacks):
    shop = make_tenant("epsilon")
    backup = Backup.objects.create(kind=Backup.Kind.TENANT, tenant=shop, tenant_label="epsilon",
                                   schema_name=shop.schema_name)
    owners = services.endpoint_create(url="https://epsilon.example.com/in", tenant=shop, actor=ACTOR).endpoint
    with django_capture_on_commit_callbacks(execute=True):
        mark_failed(backup, "pg_dump: connection refused", ACTOR)
    failed = Message.objects.get(type="backup.failed", deliveries__endpoint=everything).payload["data"]
    assert failed["backup"]["id"] == str(backup.pk) and failed["backup"]["status"] == "failed"
    assert failed["backup"]["reason"] == "pg_dump: connection refused"
    assert failed["tenant"]["subdomain"] == "epsilon"
    # The shop's own endpoint hears the failure without the internal reason (hosts, buckets, paths).
    told_shop = Message.objects.get(type="backup.failed", deliveries__endpoint=owners).payload["data"]
    assert told_shop["backup"]["reason"] == SHOP_REASON and "pg_dump" not in str(told_shop)
    assert told_shop["backup"]["id"] == str(backup.pk) and told_shop["tenant"]["subdomain"] == "epsilon"
    environment = Environment.objects.create(name="production")
    target = Target.objects.create(environment=environment, name="prod")
    old = Release.objects.create(version="1.0.0", images={"web": "r/web:1"})
    new = Release.objects.create(version="1.1.0", images={"web": "r/web:2"})
    good = Deployment.objects.create(target=target, release=new, previous_release=old, status="succeeded")
    bad = Deployment.objects.create(target=target, release=new, previous_release=old, status="rolled_back",
                                    error="health check failed")
    broken = Deployment.objects.create(target=target, release=new, status="failed", error="boom")
    with django_capture_on_commit_callbacks(execute=True):
        audit_record(actor=ACTOR, action=Action.DEPLOYMENT_SUCCEEDED, target="production 1.1.0",
                     details={"deployment": good.pk, "outcome": "succeeded"})
        audit_record(actor=ACTOR, action=Action.DEPLOYMENT_FAILED, target="production 1.1.0",
                     details={"deployment": bad.pk, "outcome": "rolled_back"})
        audit_record(actor=ACTOR, action=Action.DEPLOYMENT_FAILED, target="production 1.1.0",
                     details={"deployment": broken.pk, "outcome": "failed"})
    succeeded = data("deployment.succeeded")["deployment"]
    assert (succeeded["environment"], succeeded["release"], succeeded["previous_release"]) == (
        "production", "1.1.0", "1.0.0")
    rolled_back = data("deployment.rolled_back")["deployment"]
    assert rolled_back["automatic_rollback"] is True and rolled_back["error"] == "health check failed"
    assert data("deployment.failed")["deployment"]["status"] == "failed"
    assert Message.objects.get(type="deployment.succeeded").tenant is None


def test_audit_events_that_are_not_webhook_events_send_nothing(everything, make_tenant,
                                                              django_capture_on_commit_callbacks):
    shop = make_tenant("zeta")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        audit_record(actor=ACTOR, action=Action.OWNER_LOGGED_IN, tenant=shop, target="owner@zeta.test")
        audit_record(actor=ACTOR, action=Action.WEBHOOK_ENDPOINT_CHANGED, target="x")
    assert callbacks == [] and not Message.objects.exists()


def test_a_shop_endpoint_hears_only_its_own_shop(make_tenant, django_capture_on_commit_callbacks):
    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    platform = services.endpoint_create(url="https://hooks.example.com/platform", actor=ACTOR).endpoint
    alphas = services.endpoint_create(url="https://alpha.example.com/in", tenant=alpha, actor=ACTOR).endpoint
    betas = services.endpoint_create(url="https://beta.example.com/in", tenant=beta, actor=ACTOR).endpoint
    picky = services.endpoint_create(url="https://alpha.example.com/picky", tenant=alpha,
                                     events=["tenant.resumed"], actor=ACTOR).endpoint
    with django_capture_on_commit_callbacks(execute=True):
        tenant_suspend(tenant=alpha, reason="x", actor=ACTOR)
        tenant_suspend(tenant=beta, reason="y", actor=ACTOR)
        tenant_resume(tenant=alpha, actor=ACTOR)
        audit_record(actor=ACTOR, action=Action.DEPLOYMENT_SUCCEEDED, target="production 1.0.0",
                     details={"deployment": 999999, "outcome": "succeeded"})

    def heard(endpoint: Endpoint) -> list[tuple[str, str]]:
        return sorted(deliveries_for(endpoint=endpoint).values_list("event_type", "tenant_label"))

    assert heard(platform) == [("deployment.succeeded", ""), ("tenant.resumed", "alpha"),
                               ("tenant.suspended", "alpha"), ("tenant.suspended", "beta")]
    assert heard(alphas) == [("tenant.resumed", "alpha"), ("tenant.suspended", "alpha")]
    assert heard(betas) == [("tenant.suspended", "beta")]
    assert heard(picky) == [("tenant.resumed", "alpha")]
    # What an API view for a shop would list: its own endpoints' deliveries only.
    assert {d.endpoint_id for d in deliveries_for(tenant=beta)} == {betas.pk}
    assert deliveries_for(tenant=alpha, event_type="tenant.resumed").count() == 2
    assert deliveries_for(tenant=alpha, status="succeeded").count() == 0


def test_every_declared_event_type_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    missing = [name for name in EVENT_TYPES if f"`{name}`" not in doc]
    assert not missing, f"describe these in docs/webhooks.md: {missing}"


def test_a_broken_audit_receiver_does_not_undo_the_change(make_tenant, caplog):
    from core.audit import audit_recorded

    def broken(sender, event, **kwargs):
        raise RuntimeError("receiver bug")

    shop = make_tenant("eta")
    audit_recorded.connect(broken, dispatch_uid="test-broken")
    try:
        tenant_suspend(tenant=shop, reason="x", actor=ACTOR)
    finally:
        audit_recorded.disconnect(dispatch_uid="test-broken")
    shop.refresh_from_db()
    assert shop.status == "suspended"
    assert "receiver bug" in caplog.text
