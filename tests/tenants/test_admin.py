"""The staff console: tenant list, provisioning form, lifecycle actions, audit log, permissions.

Actions are exercised end to end: the admin enqueues on the real Redis, the real RQ worker runs
the job against the test database, and the effect and its audit event are checked.
"""

from datetime import timedelta
from urllib.parse import quote

import django_rq
import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tenants.utils import schema_exists

from core.models import AuditEvent
from core.roles import OPERATORS, SUPPORT
from storefront.models import Product
from tenants.jobs import deprovision_tenant_job
from tenants.models import Domain, Plan, Tenant
from tests.staff import admin_client, admin_url, staff_user

CHANGELIST = admin_url("admin:tenants_tenant_changelist")
ADD = admin_url("admin:tenants_tenant_add")
AUDIT_LIST = admin_url("admin:core_auditevent_changelist")
ALL_ACTIONS = ["suspend_tenants", "resume_tenants", "change_plan", "issue_owner_link", "deprovision_tenants"]


@pytest.fixture
def operator(db):
    return staff_user("olivia", OPERATORS)


@pytest.fixture
def support(db):
    return staff_user("sam", SUPPORT)


@pytest.fixture
def ops(operator):
    return admin_client(operator)


def queued(queue: str = "default") -> list:
    return django_rq.get_queue(queue).jobs


def forget_setup_jobs() -> None:
    """Drop jobs queued while building fixtures (schema pool refills), so we see only ours."""
    for name in ("default", "long"):
        django_rq.get_queue(name).empty()


def start_action(client, action: str, tenants):
    """What the changelist's action bar posts (first step; may render a confirmation page)."""
    return client.post(
        CHANGELIST, {"action": action, "index": 0, "_selected_action": [str(t.pk) for t in tenants]}
    )


def apply_action(client, action: str, tenants, **fields):
    """What a confirmation page posts back."""
    data = {"action": action, "apply": "yes", "_selected_action": [str(t.pk) for t in tenants], **fields}
    return client.post(CHANGELIST, data, follow=True)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def staff_events(action: str, tenant) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, tenant=tenant))


def bulk_tenants(plan, count: int, start: int = 0, **fields) -> list[Tenant]:
    """Tenant rows without schemas: enough for list pages, cheap at thousands."""
    now = timezone.now()
    tenants = Tenant.objects.bulk_create(
        Tenant(
            subdomain=f"shop-{i:05d}", schema_name=f"shop_{i:05d}", name=f"Shop {i}", plan=plan,
            owner_email=f"owner{i}@shops.test", status=fields.get("status", Tenant.Status.ACTIVE),
            product_count=i, schema_bytes=i * 4096 + 1_500_000, usage_refreshed_at=now - timedelta(hours=1),
        )
        for i in range(start, start + count)
    )
    Domain.objects.bulk_create(
        Domain(domain=f"{t.subdomain}.localhost", tenant=t, kind=Domain.Kind.PLATFORM,
               status=Domain.Status.ACTIVE, is_primary=True)
        for t in tenants
    )
    return tenants


# -- the tenants list --------------------------------------------------------------------------


def test_list_shows_badges_plan_domains_and_usage_snapshot(ops, plans):
    active, suspended = bulk_tenants(plans["growth"], 2)
    Tenant.objects.filter(pk=suspended.pk).update(status=Tenant.Status.SUSPENDED, status_reason="unpaid")
    Domain.objects.create(domain="shop.acme.test", tenant=active, kind=Domain.Kind.CUSTOM, is_primary=False)
    Tenant.objects.filter(pk=active.pk).update(product_count=12, schema_bytes=3 * 1024 * 1024)

    page = ops.get(CHANGELIST).content.decode()

    assert '<span class="tenant-badge tenant-badge-ok" title="Active">Active</span>' in page
    assert '<span class="tenant-badge tenant-badge-warn" title="unpaid">Suspended</span>' in page
    assert "Growth" in page
    assert "shop-00000.localhost<br>shop.acme.test" in page
    assert "12 products<br>3.0\xa0MB<br>" in page and "as of 1\xa0hour ago" in page
    assert ">Provision tenant</a>" in page


def test_list_search_filters_and_date_hierarchy(ops, plans):
    bulk_tenants(plans["growth"], 3)
    starter = bulk_tenants(plans["starter"], 1, start=10, status=Tenant.Status.FAILED)[0]
    Domain.objects.create(domain="www.findme.test", tenant=starter, kind=Domain.Kind.CUSTOM, is_primary=False)

    def shown(query: str) -> int:
        return ops.get(CHANGELIST + query).context["cl"].result_count

    assert shown("") == 4
    assert shown("?q=findme.test") == 1  # by custom domain
    assert shown("?q=owner1@shops.test") == 1  # by owner email
    assert shown("?q=Shop+1") == 2  # by name: "Shop 1" and "Shop 10"
    assert shown("?status__exact=failed") == 1
    assert shown(f"?plan__id__exact={plans['starter'].pk}") == 1
    assert shown(f"?created_at__year={timezone.now().year}") == 4


def test_list_makes_a_constant_number_of_queries_at_2000_tenants(ops, plans, django_assert_max_num_queries):
    bulk_tenants(plans["growth"], 20)
    with CaptureQueriesContext(connection) as small:
        assert ops.get(CHANGELIST).status_code == 200

    bulk_tenants(plans["starter"], 1980, start=20)
    assert Tenant.objects.count() == 2000
    with CaptureQueriesContext(connection) as large:
        response = ops.get(CHANGELIST)
    assert response.status_code == 200
    assert response.context["cl"].result_count == 2000
    assert len(response.context["cl"].result_list) == 100  # one page, every row fully rendered
    assert len(large) == len(small), [q["sql"] for q in large.captured_queries]
    # Session, user, 2 permission lookups, plans filter, 2 counts, the page, its domains, 2 dates.
    assert len(large) <= 12

    # Searching, filtering, ordering and the next page keep the same bound.
    growth = plans["growth"].pk
    for query in ("?q=shop-01", "?status__exact=active&o=6", "?p=5", f"?plan__id__exact={growth}"):
        with django_assert_max_num_queries(len(small)):
            assert ops.get(CHANGELIST + query).status_code == 200


# -- provisioning form --------------------------------------------------------------------------


def test_provision_form_shows_field_errors_from_the_service(ops, plans, django_capture_on_commit_callbacks):
    bulk_tenants(plans["growth"], 1)  # shop-00000 is taken
    page = ops.get(ADD).content.decode()
    assert "Provision tenant" in page
    assert "Retired" not in page  # inactive plans are not offered

    cases = [
        ({"subdomain": "ab"}, "subdomain", "must be 3 to 63 characters long"),
        ({"subdomain": "admin"}, "subdomain", "reserved by the platform"),
        ({"subdomain": "shop-00000"}, "subdomain", "is taken by 'Shop 0'"),
        ({"owner_email": "not-an-email"}, "owner_email", "is not a valid email address"),
        ({"plan": plans["retired"].pk}, "plan", "Select a valid choice"),
        ({"name": "   "}, "name", "This field is required"),
    ]
    good = {"subdomain": "acme-shoes", "name": "Acme Shoes", "plan": plans["growth"].pk,
            "owner_email": "owner@acme.test"}
    for change, field, message in cases:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            response = ops.post(ADD, {**good, **change})
        assert response.status_code == 200, change
        errors = response.context["adminform"].form.errors
        assert message in " ".join(errors[field]), (change, errors)
        assert callbacks == []  # nothing to enqueue
    assert not Tenant.objects.filter(subdomain="acme-shoes").exists()
    assert queued() == []
    assert not AuditEvent.objects.exists()


def test_provision_form_retries_a_failed_tenant(ops, plans, django_capture_on_commit_callbacks):
    failed = bulk_tenants(plans["growth"], 1, status=Tenant.Status.FAILED)[0]
    with django_capture_on_commit_callbacks(execute=True):
        response = ops.post(ADD, {"subdomain": "shop-00000", "name": "Shop Zero",
                                  "plan": plans["starter"].pk, "owner_email": "new@shops.test"})
    assert response.status_code == 302
    failed.refresh_from_db()
    assert (failed.name, failed.plan, failed.owner_email) == ("Shop Zero", plans["starter"], "new@shops.test")
    assert Tenant.objects.count() == 1
    assert AuditEvent.objects.filter(action="tenant.retry_requested", tenant=failed, actor="olivia").exists()
    (job,) = queued()
    assert job.func_name == "tenants.jobs.provision_tenant_job" and job.args[0] == str(failed.pk)


@pytest.mark.django_db(transaction=True)
def test_provision_form_records_the_tenant_and_the_worker_builds_it(ops, plans, run_worker):
    response = ops.post(ADD, {"subdomain": " Acme-Shoes ", "name": "Acme Shoes",
                              "plan": plans["growth"].pk, "owner_email": "Owner@Acme.test"}, follow=True)
    tenant = Tenant.objects.get(subdomain="acme-shoes")
    assert response.redirect_chain[-1][0] == admin_url("admin:tenants_tenant_change", tenant.pk)
    assert "Tenant acme-shoes recorded; provisioning is queued." in messages_of(response)[0]
    assert tenant.status == Tenant.Status.PROVISIONING and tenant.owner_email == "owner@acme.test"
    assert [job.func_name for job in queued()] == ["tenants.jobs.provision_tenant_job"]
    requested = AuditEvent.objects.get(action="tenant.requested", tenant=tenant)
    assert (requested.actor_type, requested.actor) == ("staff", "olivia")

    run_worker()

    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.ACTIVE
    assert schema_exists("acme_shoes")
    provisioned = AuditEvent.objects.get(action="tenant.provisioned", tenant=tenant)
    assert provisioned.actor_type == "job" and provisioned.actor.endswith("for staff:olivia")
    assert LogEntry.objects.filter(object_id=str(tenant.pk)).exists()


# -- lifecycle actions, through the real worker ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_suspend_asks_for_a_reason_then_the_worker_suspends_and_resume_undoes_it(
    ops, make_tenant, run_worker
):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    forget_setup_jobs()
    page = start_action(ops, "suspend_tenants", [acme, globex])
    assert page.status_code == 200
    html = page.content.decode()
    assert "Suspend tenants" in html and 'name="reason"' in html and "acme" in html and "globex" in html
    assert queued() == []

    missing = apply_action(ops, "suspend_tenants", [acme], reason="  ")
    assert "This field is required." in missing.content.decode()
    assert queued() == []

    done = apply_action(ops, "suspend_tenants", [acme, globex], reason="unpaid invoice")
    assert "2 tenant(s) queued for suspension." in messages_of(done)
    assert len(queued()) == 2
    run_worker()
    for tenant in (acme, globex):
        tenant.refresh_from_db()
        assert (tenant.status, tenant.status_reason) == (Tenant.Status.SUSPENDED, "unpaid invoice")
        (event,) = staff_events("tenant.suspended", tenant)
        assert event.actor.endswith("for staff:olivia") and event.details == {"reason": "unpaid invoice"}
    assert ops.get(CHANGELIST).content.decode().count("tenant-badge-warn") == 2

    # Resume has no confirmation page; the already-active tenant is reported as skipped.
    initech = make_tenant("initech")
    forget_setup_jobs()
    resumed = start_action(ops, "resume_tenants", [acme, initech])
    assert resumed.status_code == 302
    listing = ops.get(CHANGELIST)
    assert "1 tenant(s) queued for resumption." in messages_of(listing)
    assert "Skipped 1 tenant(s) that are not suspended: initech (active)." in messages_of(listing)
    run_worker()
    acme.refresh_from_db()
    globex.refresh_from_db()
    assert acme.status == Tenant.Status.ACTIVE and globex.status == Tenant.Status.SUSPENDED
    (event,) = staff_events("tenant.resumed", acme)
    assert event.actor.endswith("for staff:olivia")


@pytest.mark.django_db(transaction=True)
def test_change_plan_moves_tenants_that_fit_and_reports_those_that_do_not(
    ops, plans, make_tenant, run_worker
):
    small, big = make_tenant("small"), make_tenant("big")
    forget_setup_jobs()
    connection.set_tenant(big)
    try:
        Product.objects.bulk_create(Product(name=f"P{i}", price=1) for i in range(5))
    finally:
        connection.set_schema_to_public()

    page = start_action(ops, "change_plan", [small, big]).content.decode()
    assert "Change plan" in page and "Current plan" in page
    assert "Retired" not in page  # only active plans can be chosen

    done = apply_action(ops, "change_plan", [small, big], plan=plans["starter"].pk)
    notes = messages_of(done)
    assert "1 tenant(s) queued for a move to Starter." in notes
    assert any("1 tenant(s) not moved" in n and "big uses 5 products (plan allows 3)" in n for n in notes)
    assert len(queued()) == 1
    run_worker()
    small.refresh_from_db()
    big.refresh_from_db()
    assert small.plan.slug == "starter" and big.plan.slug == "growth"
    (event,) = staff_events("tenant.plan_changed", small)
    assert event.details == {"from": "growth", "to": "starter"} and event.actor.endswith("staff:olivia")

    # Picking the plan a tenant is already on queues nothing.
    again = apply_action(ops, "change_plan", [small], plan=plans["starter"].pk)
    assert "Already on Starter: small." in messages_of(again)
    assert queued() == []


@pytest.mark.django_db(transaction=True)
def test_owner_link_is_shown_once_uncached_and_audited(ops, make_tenant, plans):
    acme = make_tenant("acme")
    failed = bulk_tenants(plans["growth"], 1, status=Tenant.Status.FAILED)[0]
    response = start_action(ops, "issue_owner_link", [acme, failed])
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    assert "http://acme.localhost/account/set-password/" in html
    assert "Shown once and not stored" in html
    assert "shop-00000 (failed)" in html
    (event,) = staff_events("tenant.owner_link_issued", acme)
    assert (event.actor_type, event.actor, event.target) == ("staff", "olivia", "owner@acme.test")
    # Nothing went into the session or a message cookie.
    assert "messages" not in response.cookies
    assert list(ops.get(CHANGELIST).context["messages"]) == []


@pytest.mark.django_db(transaction=True)
def test_deprovision_names_what_is_lost_requires_typed_confirmation_and_drops_the_schema(
    ops, make_tenant, run_worker
):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    forget_setup_jobs()
    connection.set_tenant(acme)
    try:
        Product.objects.bulk_create(Product(name=f"P{i}", price=1) for i in range(2))
    finally:
        connection.set_schema_to_public()

    page = start_action(ops, "deprovision_tenants", [acme, globex])
    html = page.content.decode()
    assert "DROPS each schema" in html and "cannot be undone" in html
    for cell in ("<td>acme</td>", "<td>acme</td>", "<td>globex</td>", "<td>2</td>", "<td>0</td>"):
        assert cell in html
    assert "Type the subdomain of every tenant listed" in html

    wrong = apply_action(ops, "deprovision_tenants", [acme, globex], confirm="acme")
    assert "Confirmation did not match" in wrong.content.decode()
    assert queued("long") == [] and queued() == []

    done = apply_action(ops, "deprovision_tenants", [acme, globex], confirm="globex acme")
    assert "2 tenant(s) queued for deprovisioning." in messages_of(done)
    assert len(queued("long")) == 2
    run_worker()
    for tenant in (acme, globex):
        tenant.refresh_from_db()
        assert tenant.status == Tenant.Status.DELETED
        assert not schema_exists(tenant.schema_name)
        (event,) = staff_events("tenant.deprovisioned", tenant)
        assert event.details["schema_dropped"] is True and event.actor.endswith("for staff:olivia")
    assert not Domain.objects.filter(tenant__in=[acme, globex]).exists()
    # The job is idempotent: a retried run finds the tenant gone and does nothing more.
    assert deprovision_tenant_job(str(acme.pk), True, "staff", "olivia") == Tenant.Status.DELETED
    assert len(staff_events("tenant.deprovisioned", acme)) == 1

    # Deleted tenants are not offered again.
    assert "None of the selected tenants can be changed" in start_action(
        ops, "deprovision_tenants", [acme]
    ).content.decode()


# -- the change form ---------------------------------------------------------------------------


def test_change_form_edits_only_the_name_and_audits_it(ops, plans):
    tenant = bulk_tenants(plans["growth"], 1)[0]
    url = admin_url("admin:tenants_tenant_change", tenant.pk)
    page = ops.get(url).content.decode()
    assert 'name="name"' in page
    for locked in ("status", "subdomain", "schema_name", "plan", "owner_email"):
        assert f'name="{locked}"' not in page
    assert "shop-00000.localhost" in page  # domains inline
    assert "Full audit trail" in page

    domain = tenant.domains.get()
    inline = {"domains-TOTAL_FORMS": "1", "domains-INITIAL_FORMS": "1", "domains-MIN_NUM_FORMS": "0",
              "domains-MAX_NUM_FORMS": "0", "domains-0-id": domain.pk, "domains-0-tenant": tenant.pk,
              "domains-0-domain": "evil.example", "domains-0-status": "disabled"}
    response = ops.post(url, {"name": "Renamed Shop", "status": "suspended", "subdomain": "evil",
                              "schema_name": "public", "plan": plans["starter"].pk, **inline})
    assert response.status_code == 302, response.context["errors"]
    tenant.refresh_from_db()
    assert tenant.name == "Renamed Shop"
    assert (tenant.status, tenant.subdomain, tenant.schema_name, tenant.plan) == (
        "active", "shop-00000", "shop_00000", plans["growth"]
    )
    domain.refresh_from_db()
    assert (domain.domain, domain.status) == ("shop-00000.localhost", "active")
    event = AuditEvent.objects.get(action="tenant.renamed", tenant=tenant)
    assert (event.actor, event.details) == ("olivia", {"from": "Shop 0", "to": "Renamed Shop"})

    # The detail page lists that event among the tenant's recent activity; lists and None in an
    # event's details read as text there, not as Python reprs.
    AuditEvent.objects.create(actor="olivia", action="api_key.created", tenant=tenant, target="shp_x (app)",
                              details={"scopes": ["domains:read", "webhooks:read"], "expires_at": None})
    page = ops.get(url).content.decode()
    assert "tenant.renamed" in page
    assert "scopes=domains:read, webhooks:read, expires_at=none" in page
    assert "[&#x27;domains:read&#x27;" not in page and "None" not in page.split("tenant-activity")[1]
    # Nobody deletes a tenant row from the admin; deprovisioning keeps it.
    assert ops.get(admin_url("admin:tenants_tenant_delete", tenant.pk)).status_code == 403


def test_plan_changes_are_audited(ops, plans):
    response = ops.post(admin_url("admin:tenants_plan_add"), {
        "name": "Pro", "slug": "pro", "monthly_price": "99.00", "max_products": 500,
        "max_custom_domains": 5, "max_storage_mb": 1000, "backup_retention_days": 14,
        "backup_frequency": "daily", "is_active": "on",
    })
    assert response.status_code == 302
    pro = Plan.objects.get(slug="pro")
    created = AuditEvent.objects.get(action="plan.created", target="pro")
    assert created.actor == "olivia" and created.details["max_products"] == {"from": None, "to": "500"}

    ops.post(admin_url("admin:tenants_plan_change", pro.pk), {
        "name": "Pro", "slug": "pro", "monthly_price": "99.00", "max_products": 800,
        "max_custom_domains": 5, "max_storage_mb": 1000, "backup_retention_days": 14,
        "backup_frequency": "daily", "is_active": "on",
    })
    changed = AuditEvent.objects.get(action="plan.changed", target="pro")
    assert changed.details == {"max_products": {"from": "500", "to": "800"}}

    ops.post(admin_url("admin:tenants_plan_delete", pro.pk), {"post": "yes"})
    assert not Plan.objects.filter(slug="pro").exists()
    assert AuditEvent.objects.filter(action="plan.deleted", target="pro", actor="olivia").exists()

    # A plan still referenced by tenants cannot be deleted (the page says why).
    bulk_tenants(plans["growth"], 1)
    page = ops.post(admin_url("admin:tenants_plan_delete", plans["growth"].pk), {"post": "yes"})
    assert "Cannot delete plan" in page.content.decode()
    (protected,) = page.context["protected"]
    assert protected.startswith("Tenant: <a") and protected.endswith(">Shop 0 (shop-00000)</a>")
    assert Plan.objects.filter(slug="growth").exists()


# -- support staff: read-only ------------------------------------------------------------------


def test_support_sees_everything_and_can_run_nothing(support, plans):
    client = admin_client(support)
    tenant = bulk_tenants(plans["growth"], 1)[0]

    listing = client.get(CHANGELIST)
    assert listing.status_code == 200
    assert "shop-00000" in listing.content.decode()
    assert listing.context["action_form"] is None or not [
        name for name, _ in listing.context["action_form"].fields["action"].choices if name
    ]
    assert ">Provision tenant</a>" not in listing.content.decode()

    for action in ALL_ACTIONS:
        response = client.post(CHANGELIST, {"action": action, "index": 0, "apply": "yes",
                                             "_selected_action": [str(tenant.pk)], "reason": "x",
                                             "confirm": "shop-00000", "plan": plans["starter"].pk})
        assert response.status_code in (200, 302), action
    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.ACTIVE and tenant.plan == plans["growth"]
    assert queued() == [] and queued("long") == []
    assert not AuditEvent.objects.exclude(action__startswith="plan.").exists()

    assert client.get(ADD).status_code == 403
    change_url = admin_url("admin:tenants_tenant_change", tenant.pk)
    page = client.get(change_url)
    assert page.status_code == 200 and 'name="name"' not in page.content.decode()
    assert client.post(change_url, {"name": "Hacked"}).status_code == 403
    assert client.get(admin_url("admin:tenants_plan_add")).status_code == 403
    assert client.get(admin_url("admin:tenants_plan_changelist")).status_code == 200
    assert client.get(AUDIT_LIST).status_code == 200
    # The job dashboard can empty queues: operators only, under both of its addresses.
    assert client.get("/django-rq/").status_code == 403
    assert client.post("/django-rq/queues/0/empty/").status_code == 403
    assert client.get(admin_url("admin:django_rq_dashboard_changelist")).status_code == 403


def test_operator_reaches_the_job_dashboard_and_anonymous_is_sent_to_login(ops, client):
    assert ops.get("/django-rq/").status_code == 200
    assert ops.get(admin_url("admin:django_rq_dashboard_changelist")).status_code == 200
    anonymous = client.get("/django-rq/", HTTP_HOST="localhost")
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]


def test_staff_without_a_role_sees_nothing(db):
    client = admin_client(staff_user("newbie"))
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(AUDIT_LIST).status_code == 403


# -- the audit log -----------------------------------------------------------------------------


def test_audit_log_is_read_only_even_for_superusers(plans):
    client = admin_client(staff_user("root", superuser=True))
    tenant = bulk_tenants(plans["growth"], 1)[0]
    event = AuditEvent.objects.create(actor_type="staff", actor="olivia", action="tenant.suspended",
                                      tenant=tenant, tenant_label=tenant.subdomain, target="shop-00000",
                                      details={"reason": "unpaid"})
    change_url = admin_url("admin:core_auditevent_change", event.pk)

    assert client.get(admin_url("admin:core_auditevent_add")).status_code == 403
    view = client.get(change_url)
    assert view.status_code == 200 and "<strong>reason</strong>: unpaid" in view.content.decode()
    assert 'name="action"' not in view.content.decode()
    assert client.post(change_url, {"action": "tenant.resumed"}).status_code == 403
    assert client.get(admin_url("admin:core_auditevent_delete", event.pk)).status_code == 403
    listing = client.get(AUDIT_LIST)
    assert listing.context["action_form"] is None  # no bulk delete either
    event.refresh_from_db()
    assert event.action == "tenant.suspended"


def test_audit_log_filters_and_search(ops, plans):
    acme, globex = bulk_tenants(plans["growth"], 2)
    old = timezone.now() - timedelta(days=400)
    for tenant, action, actor_type, when in [
        (acme, "tenant.suspended", "staff", timezone.now()),
        (acme, "tenant.resumed", "job", timezone.now()),
        (globex, "tenant.suspended", "command", old),
    ]:
        AuditEvent.objects.create(actor_type=actor_type, actor="x", action=action, tenant=tenant,
                                  tenant_label=tenant.subdomain, target=tenant.subdomain, created_at=when,
                                  details={"reason": f"why-{tenant.subdomain}"})

    def shown(query: str) -> list[str]:
        response = ops.get(AUDIT_LIST + query)
        assert response.status_code == 200, query
        return sorted(f"{e.tenant_label}:{e.action}" for e in response.context["cl"].result_list)

    assert len(shown("")) == 3
    assert shown("?action=tenant.suspended") == ["shop-00000:tenant.suspended", "shop-00001:tenant.suspended"]
    assert shown("?actor_type__exact=job") == ["shop-00000:tenant.resumed"]
    assert shown("?tenant_label=SHOP-00001") == ["shop-00001:tenant.suspended"]
    assert shown(f"?created_at__year={old.year}") == ["shop-00001:tenant.suspended"]
    assert shown("?created_at__gte=" + quote((timezone.now() - timedelta(days=7)).isoformat())) == [
        "shop-00000:tenant.resumed", "shop-00000:tenant.suspended",
    ]
    assert shown("?q=why-shop-00001") == ["shop-00001:tenant.suspended"]  # inside details
    # The tenant filter is a text box that keeps the other filters.
    page = ops.get(AUDIT_LIST + "?action=tenant.suspended&tenant_label=shop-00000").content.decode()
    assert 'name="tenant_label" value="shop-00000"' in page
    assert '<input type="hidden" name="action" value="tenant.suspended">' in page
    # The tenant page links to its trail.
    tenant_page = ops.get(admin_url("admin:tenants_tenant_change", acme.pk)).content.decode()
    assert f'href="{AUDIT_LIST}?tenant_label=shop-00000"' in tenant_page
