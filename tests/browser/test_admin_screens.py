"""The staff console in a real browser: log in, read the tenants list, run actions, as people do.

Screenshots go to test-artifacts/ for a human to look at.
"""

import base64
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django_otp.oath import totp
from playwright.sync_api import Page, expect

from core.admin_links import admin_path
from core.audit import Actor
from core.models import AuditEvent
from core.roles import OPERATORS, SUPPORT
from tenants.models import Tenant
from tenants.usage import usage_refresh
from tests.staff import STAFF_PASSWORD, staff_user
from tests.tenants.test_admin import bulk_tenants, forget_setup_jobs

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def shot(page: Page, path) -> None:
    page.wait_for_load_state("networkidle")  # icons and stylesheets in the picture
    page.screenshot(path=path, full_page=True)


def log_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_contain_text("Platform control plane")


def run_action(page: Page, subdomains: list[str], action: str) -> None:
    for subdomain in subdomains:
        page.locator("#result_list tr", has=page.locator(f"th a:text-is('{subdomain}')")).locator(
            "input.action-select"
        ).check()
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def test_operator_runs_the_tenant_console(page: Page, live_server, make_tenant, plans, run_worker, artifacts):
    staff_user("olivia", OPERATORS)
    shops = [make_tenant("acme-shoes", name="Acme Shoes"),
             make_tenant("globex", name="Globex Outfitters", plan="starter")]
    for tenant, status, reason in zip(
        bulk_tenants(plans["growth"], 3, start=900),
        (Tenant.Status.FAILED, Tenant.Status.SUSPENDED, Tenant.Status.PROVISIONING),
        ("Schema build timed out", "unpaid invoice", ""), strict=True,
    ):
        Tenant.objects.filter(pk=tenant.pk).update(status=status, status_reason=reason)
    usage_refresh(tenants=shops)  # the bulk rows have no schema to measure
    forget_setup_jobs()
    base = live_server.url

    page.goto(f"{base}/admin/")
    shot(page, artifacts / "admin-01-login.png")
    log_in(page, base, "olivia")
    page.goto(f"{base}/admin/tenants/tenant/")
    expect(page.locator(".tenant-badge-error")).to_have_text("Failed")
    shot(page, artifacts / "admin-02-tenants-list.png")

    # Suspend: the intermediate page asks for a reason.
    run_action(page, ["acme-shoes"], "suspend_tenants")
    expect(page.locator("h1")).to_have_text("Suspend tenants")
    shot(page, artifacts / "admin-03-suspend-reason.png")
    page.fill("textarea[name=reason]", "Chargeback under review")
    page.click("input[type=submit][value=Suspend]")
    expect(page.locator(".messagelist")).to_contain_text("1 tenant(s) queued for suspension.")
    shot(page, artifacts / "admin-04-suspension-queued.png")

    run_worker()
    page.reload()
    row = page.locator("#result_list tr", has=page.locator("th a:text-is('acme-shoes')"))
    expect(row.locator(".tenant-badge")).to_have_text("Suspended")
    assert AuditEvent.objects.get(action="tenant.suspended").actor.endswith("for staff:olivia")

    # Change plan: refusals are reported at once.
    run_action(page, ["acme-shoes", "globex"], "change_plan")
    page.select_option("select[name=plan]", label="Starter")
    shot(page, artifacts / "admin-05-change-plan.png")
    page.click("input[type=submit][value='Change plan']")
    expect(page.locator(".messagelist")).to_contain_text("1 tenant(s) queued for a move to Starter.")
    expect(page.locator(".messagelist")).to_contain_text("Already on Starter: globex.")

    # Deprovision: the confirmation names what is lost and wants the subdomain typed.
    run_action(page, ["globex"], "deprovision_tenants")
    expect(page.locator(".tenant-danger")).to_contain_text("DROPS each schema")
    page.fill("input[name=confirm]", "globe")
    page.click("input[type=submit].tenant-danger-button")
    expect(page.locator(".errorlist")).to_contain_text("Confirmation did not match")
    shot(page, artifacts / "admin-06-deprovision-confirm.png")
    page.fill("input[name=confirm]", "globex")
    page.click("input[type=submit].tenant-danger-button")
    expect(page.locator(".messagelist")).to_contain_text("1 tenant(s) queued for deprovisioning.")
    run_worker()
    assert Tenant.objects.get(subdomain="globex").status == Tenant.Status.DELETED

    # Owner link: shown once, on its own page.
    page.goto(f"{base}/admin/tenants/tenant/")
    run_action(page, ["acme-shoes"], "issue_owner_link")
    expect(page.locator(".tenant-links-table code")).to_contain_text("/account/set-password/")
    shot(page, artifacts / "admin-07-owner-link.png")

    # The tenant's page: read-only lifecycle fields, domains, recent activity.
    page.goto(f"{base}/admin/tenants/tenant/")
    page.click("#result_list th a:text-is('acme-shoes')")
    expect(page.locator(".tenant-activity")).to_contain_text("tenant.suspended")
    shot(page, artifacts / "admin-08-tenant-detail.png")

    # The provisioning form shows the service's message on the right field.
    page.goto(f"{base}/admin/tenants/tenant/add/")
    page.fill("#id_subdomain", "acme-shoes")
    page.fill("#id_name", "Another Acme")
    page.select_option("#id_plan", label="Growth")
    page.fill("#id_owner_email", "someone@acme.test")
    page.click("input[name=_save]")
    expect(page.locator(".errorlist")).to_contain_text("is taken by 'Acme Shoes'")
    shot(page, artifacts / "admin-09-provision-error.png")
    page.fill("#id_subdomain", "initech")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("Tenant initech recorded; provisioning is queued.")
    run_worker()
    assert Tenant.objects.get(subdomain="initech").status == Tenant.Status.ACTIVE

    page.goto(base + admin_path(AuditEvent, "changelist"))  # the audit log lives in core
    expect(page.locator("#result_list")).to_contain_text("tenant.deprovisioned")
    shot(page, artifacts / "admin-10-audit-log.png")


def test_support_reads_but_is_offered_no_actions(page: Page, live_server, plans, artifacts):
    staff_user("sam", SUPPORT)
    bulk_tenants(plans["growth"], 3)
    base = live_server.url
    log_in(page, base, "sam")
    page.goto(f"{base}/admin/tenants/tenant/")
    expect(page.locator("#result_list")).to_contain_text("shop-00001")
    expect(page.locator("select[name=action]")).to_have_count(0)
    expect(page.get_by_text("Provision tenant")).to_have_count(0)
    shot(page, artifacts / "admin-11-support-list.png")
    page.click("#result_list th a:text-is('shop-00000')")
    expect(page.locator("input[name=name]")).to_have_count(0)
    assert re.search(r"/admin/tenants/tenant/[0-9a-f-]+/change/$", page.url)
    page.goto(f"{base}/django-rq/")
    expect(page.locator("body")).to_contain_text("403")


def test_staff_sets_up_two_factor_and_a_lockout_says_how_long(page: Page, live_server, artifacts):
    staff_user("olivia", OPERATORS)
    base = live_server.url
    log_in(page, base, "olivia")

    # The QR code is drawn (and on white, so it scans in the dark theme too); the key is typeable.
    page.goto(f"{base}/admin/2fa/setup/")
    qr = page.locator(".two-factor-qr svg")
    expect(qr).to_be_visible()
    assert qr.bounding_box()["width"] >= 100
    key = page.locator("code.two-factor-key")
    expect(key).to_have_text(re.compile(r"^[A-Z2-7]{4}( [A-Z2-7]{1,4})+$"))
    shot(page, artifacts / "admin-12-2fa-setup.png")
    secret = base64.b32decode(key.inner_text().replace(" ", ""))
    page.fill("#id_otp_token", f"{totp(secret):06d}")
    page.click("input[type=submit][value='Turn on two-factor']")
    expect(page.locator(".messagelist")).to_contain_text("Two-factor authentication is on")

    # Someone guessing another name: the login box says how long to wait and whom to ask.
    guesser = page.context.browser.new_page()
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        guesser.goto(f"{base}/admin/login/")
        guesser.fill("#id_username", "nobody")
        guesser.fill("#id_password", f"guess-{attempt}")
        guesser.click("input[type=submit]")
    expect(guesser.locator("#site-name")).to_contain_text("Platform control plane")
    expect(guesser.locator("#content")).to_contain_text(f"Wait {settings.LOGIN_LOCKOUT_MINUTES} minutes")
    expect(guesser.locator("#content")).to_contain_text("platform operator or superuser")
    shot(guesser, artifacts / "admin-13-login-lockout.png")
    guesser.close()


def test_operator_reads_the_newer_console_pages(page: Page, live_server, make_tenant, settings, tmp_path,
                                               artifacts):
    """API keys (made, shown once), webhook deliveries, DR drills, the continuous archive and a shop
    restored to a moment, and the owner's API keys page: each renders, reads as text, and says what to do."""
    from backups.models import DisasterRecoveryDrill, PitrBackup
    from tests.domains.conftest import set_owner_password
    from webhooks.models import Attempt, Delivery, Message
    from webhooks.services import endpoint_create

    settings.PITR_STANZA = "platform"
    settings.PITR_REPO1 = "/srv/pgbackrest"
    settings.PITR_CONFIG_PATH = str(tmp_path / "pgbackrest.conf")
    settings.BACKUP_OFFSITE_S3_BUCKET = "dr-copies"
    settings.BACKUP_OFFSITE_S3_REGION = "eu-west-1"
    user = staff_user("olivia", OPERATORS)
    acme = make_tenant("acme-shoes", name="Acme Shoes")
    now = timezone.now()
    endpoint = endpoint_create(url="https://hooks.example.com/in", actor=Actor.staff(user)).endpoint
    message = Message.objects.create(
        id="msg_1", type="tenant.suspended", tenant=acme, tenant_label="acme-shoes",
        payload={"type": "tenant.suspended", "data": {"subdomain": "acme-shoes"}},
    )
    delivery = Delivery.objects.create(message=message, endpoint=endpoint, event_type=message.type,
                                       tenant_label="acme-shoes", status="failed", attempts=1,
                                       response_code=503)
    Attempt.objects.create(delivery=delivery, number=1, succeeded=False, response_code=503,
                           response_body="upstream busy", error="HTTP 503")
    DisasterRecoveryDrill.objects.create(trigger="scheduled", passed=True, tenant_label="acme-shoes",
                                         rto_seconds=2.9, finished_at=now, store="s3://dr-copies (eu-west-1)",
                                         checks=[{"check": "shop restore", "ok": True, "detail": "restored",
                                                  "seconds": 2.9}])
    PitrBackup.objects.create(type="full", status="succeeded", label="20261204-000000F",
                              stopped_at=now - timedelta(hours=1), size_bytes=2 << 30,
                              repo_size_bytes=400 << 20)
    base = live_server.url
    log_in(page, base, "olivia")

    # A staff key: made on the form, shown once on the page that follows, listed by state.
    page.goto(f"{base}/admin/api/apikey/add/")
    page.fill("#id_name", "billing backend")
    page.click("input[name=_save]")
    expect(page.locator("#new-api-key")).to_have_text(re.compile(r"^plt_\w{8}_\S{40,}$"))
    expect(page.locator("h1")).to_contain_text("(billing backend)")
    shot(page, artifacts / "admin-14-api-key-made.png")
    page.goto(f"{base}/admin/api/apikey/")
    row = page.locator("#result_list tr", has_text="billing backend")
    expect(row).to_contain_text("active")
    shot(page, artifacts / "admin-15-api-keys.png")

    # A failed delivery and its attempt, the payload wrapped on the page.
    page.goto(f"{base}/admin/webhooks/delivery/{delivery.pk}/change/")
    expect(page.locator("#content")).to_contain_text("upstream busy")
    shot(page, artifacts / "admin-16-webhook-delivery.png")

    page.goto(f"{base}/admin/backups/disasterrecoverydrill/")
    page.click("a.button:text('Run a DR drill now')")
    expect(page.locator("h1")).to_have_count(1)
    expect(page.locator(".breadcrumbs")).to_contain_text("Disaster-recovery drills")
    shot(page, artifacts / "admin-17-dr-drill-run.png")

    page.goto(f"{base}/admin/backups/backup/")
    expect(page.locator("#content")).to_contain_text("Continuous archive (pgBackRest)")
    expect(page.locator("#content")).to_contain_text("Off-site copies:")
    expect(page.locator("#content")).not_to_contain_text("Point-in-time recovery:")  # the archive says it
    shot(page, artifacts / "admin-18-backups-dashboard.png")

    page.goto(f"{base}/admin/tenants/tenant/{acme.pk}/change/")
    page.click("a:text('Restore to a moment…')")
    expect(page.locator("h1")).to_have_text("Restore Acme Shoes (acme-shoes) to a moment")
    expect(page.locator("#content")).to_contain_text("Recoverable window:")
    shot(page, artifacts / "admin-19-restore-to-moment.png")

    # The owner's page on the shop's own host: a key shown once, one scope a line.
    shop = f"http://acme-shoes.localhost:{base.rsplit(':', 1)[1]}"
    page.goto(f"{shop}/account/login/?next=/account/api-keys/")
    page.fill("input[name=username]", acme.owner_email)
    page.fill("input[name=password]", set_owner_password(acme))
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("API keys for Acme Shoes")
    page.fill("#id_name", "stock sync")
    page.click("button:text('Make a key')")
    expect(page.locator("#new-key")).to_have_text(re.compile(r"^shp_\w{8}_\S{40,}$"))
    expect(page.locator("label.scope")).to_have_count(4)
    shot(page, artifacts / "selfservice-api-keys.png")
