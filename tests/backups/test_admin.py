"""The backups console in the admin: dashboard, back up now, restore confirmation, download links."""

import hashlib

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from backups.models import Backup, RestoreDrill
from backups.services.drills import drill_run
from backups.services.runs import backup_tenant_now
from core.audit import Actor
from tenants.models import Tenant
from tests.backups.conftest import add_products, table_rows

ACTOR = Actor.command("pytest")
pytestmark = pytest.mark.django_db(transaction=True)


def test_dashboard_lists_backups_rpo_pitr_and_drills(staff, make_tenant):
    shop = make_tenant("acme")
    make_tenant("bolt")  # never backed up: past its RPO
    backup = backup_tenant_now(tenant=shop, actor=ACTOR)
    drill_run(backup=backup, actor=ACTOR)
    page = staff.get("/admin/backups/backup/").content.decode()
    assert "acme" in page and backup.sha256[:12] in page and "verified" in page
    assert "Not configured: WAL archiving is off" in page
    assert "past their RPO</b> (no verified backup within the plan's interval): 1" in page and "bolt" in page
    assert "Recent restore drills" in page and "pass" in page
    detail = staff.get(f"/admin/backups/backup/{backup.pk}/change/").content.decode()
    assert "storefront_product" in detail  # the manifest
    drills = staff.get("/admin/backups/restoredrill/").content.decode()
    assert "RTO" in drills or "measured" in drills


def test_back_up_now_action_queues_and_the_worker_runs_it(staff, make_tenant, run_backup_worker):
    a, b = make_tenant("acme"), make_tenant("bolt")
    response = staff.post(
        "/admin/tenants/tenant/", {"action": "backup_now", "_selected_action": [a.pk, b.pk]}, follow=True
    )
    assert "2 tenant(s) queued for backup" in response.content.decode()
    run_backup_worker()
    assert Backup.objects.filter(status=Backup.Status.VERIFIED).count() == 2


def test_restore_page_refuses_a_mistyped_confirmation_then_restores(staff, make_tenant, run_worker):
    shop = make_tenant("acme")
    add_products("acme", 20, "old-")
    backup = backup_tenant_now(tenant=shop, actor=ACTOR)
    backed_up = table_rows("acme")
    add_products("acme", 5, "later-")
    url = f"/admin/backups/backup/{backup.pk}/restore/"
    page = staff.get(url).content.decode()
    assert "REPLACES every table" in page and "20 products" in page
    refused = staff.post(url, {"mode": "in_place", "confirm": "acm"}).content.decode()
    assert "does not match" in refused and len(table_rows("acme")) == 25
    taken = staff.post(url, {"mode": "as_new", "new_subdomain": "acme", "confirm": "acme"}).content.decode()
    assert "is taken" in taken
    done = staff.post(url, {"mode": "in_place", "confirm": "acme"}, follow=True).content.decode()
    assert "queued" in done
    run_worker("long")
    assert table_rows("acme") == backed_up
    copy = staff.post(
        url, {"mode": "as_new", "new_subdomain": "acme-copy", "confirm": "acme-copy"}, follow=True
    )
    assert "as new tenant acme-copy queued" in copy.content.decode()
    run_worker("long")
    assert Tenant.objects.get(subdomain="acme-copy").status == Tenant.Status.ACTIVE
    assert table_rows("acme_copy") == backed_up


def test_download_link_is_short_lived_and_signed(staff, make_tenant, settings):
    backup = backup_tenant_now(tenant=make_tenant("acme"), actor=ACTOR)
    redirect = staff.get(f"/admin/backups/backup/{backup.pk}/download/")
    assert redirect.status_code == 302 and "token=" in redirect["Location"]
    body = b"".join(staff.get(redirect["Location"]).streaming_content)
    assert hashlib.sha256(body).hexdigest() == backup.sha256
    assert staff.get(redirect["Location"] + "x").status_code == 404
    settings.BACKUP_DOWNLOAD_LINK_SECONDS = -1  # already expired
    assert staff.get(redirect["Location"]).status_code == 404
    assert Client(HTTP_HOST="localhost").get(redirect["Location"]).status_code == 302  # login first


def test_s3_download_link_is_presigned(staff, make_tenant, s3):
    import urllib.request

    backup = backup_tenant_now(tenant=make_tenant("acme"), actor=ACTOR)
    location = staff.get(f"/admin/backups/backup/{backup.pk}/download/")["Location"]
    assert "X-Amz-Expires=900" in location and "X-Amz-Signature=" in location
    assert hashlib.sha256(urllib.request.urlopen(location, timeout=10).read()).hexdigest() == backup.sha256


def test_drill_action_from_the_admin(staff, make_tenant, run_worker):
    backup = backup_tenant_now(tenant=make_tenant("acme"), actor=ACTOR)
    staff.post("/admin/backups/backup/", {"action": "drill_selected", "_selected_action": [backup.pk]})
    run_worker("long")
    assert RestoreDrill.objects.get().passed


def test_read_only_staff_cannot_restore_download_back_up_or_export(make_tenant):
    from django.contrib.auth.models import Permission

    backup = backup_tenant_now(tenant=make_tenant("acme"), actor=ACTOR)
    viewer = get_user_model().objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(codename__in=["view_backup", "view_tenant", "view_restoredrill"])
    )
    client = Client(HTTP_HOST="localhost")
    client.force_login(viewer)
    assert client.get("/admin/backups/backup/").status_code == 200
    assert client.get(f"/admin/backups/backup/{backup.pk}/restore/").status_code == 403
    assert client.get(f"/admin/backups/backup/{backup.pk}/download/").status_code == 403
    page = client.get("/admin/tenants/tenant/").content.decode()
    assert "backup_now" not in page and "export_data" not in page
    response = client.post(
        "/admin/tenants/tenant/", {"action": "backup_now", "_selected_action": [backup.tenant_id]}
    )
    assert Backup.objects.count() == 1 and response.status_code in (200, 302)


def test_each_user_sees_only_the_links_they_may_follow(make_tenant):
    from core.roles import OPERATORS, SUPPORT
    from tests.staff import admin_client, staff_user

    tenant_backup = Backup.objects.create(
        kind=Backup.Kind.TENANT, tenant=make_tenant("acme"), tenant_label="acme",
        status=Backup.Status.VERIFIED, storage="local", location="acme/one.dump",
    )
    platform_backup = Backup.objects.create(
        kind=Backup.Kind.PLATFORM, status=Backup.Status.VERIFIED, storage="local", location="platform.dump",
    )

    def links(user) -> set[str]:
        page = admin_client(user).get("/admin/backups/backup/")
        assert page.status_code == 200
        html = page.content.decode()
        return {
            f"{what} {backup.kind}"
            for backup in (tenant_backup, platform_backup)
            for what in ("download", "restore")
            if f"/admin/backups/backup/{backup.pk}/{what}/" in html
        }

    assert links(staff_user("sup", SUPPORT)) == set()
    assert links(staff_user("op", OPERATORS)) == {"download tenant", "restore tenant"}
    assert links(staff_user("root", superuser=True)) == {
        "download tenant", "restore tenant", "download platform"
    }
