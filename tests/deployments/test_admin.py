"""The deployments console: plan preview, deploy through the real worker, live log, rollback."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from core.audit import Actor
from core.models import AuditEvent
from deployments.models import Deployment, Release, Target
from deployments.services import release_create

ACTOR = Actor.command("pytest")


@pytest.fixture
def staff():
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-123456")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    return client


@pytest.mark.slow  # the real Docker Engine
@pytest.mark.django_db(transaction=True)
def test_deploy_with_plan_preview_live_log_and_rollback_from_the_admin(
    staff, compose_target, engine, run_worker, edge_get
):
    v1 = release_create(version="1.0.0", images={"web": engine["images"]["v1"]}, actor=ACTOR)
    v2 = release_create(version="2.0.0", images={"web": engine["images"]["v2"]}, actor=ACTOR)
    url = f"/admin/deployments/release/{v1.pk}/deploy/"
    page = staff.post(url, {"environment": "production", "strategy": "blue-green", "preview": "1"})
    assert page.status_code == 200 and b'id="plan"' in page.content and b"create" in page.content
    assert not Deployment.objects.exists()  # a preview changes nothing

    done = staff.post(url, {"environment": "production", "strategy": "blue-green", "confirm": "1"})
    first = Deployment.objects.get()
    assert done.status_code == 302 and done["Location"].endswith(f"/deployment/{first.pk}/change/")
    live = staff.get(done["Location"])
    assert b'http-equiv="refresh"' in live.content  # planned: the page keeps refreshing
    run_worker("long")
    assert edge_get(compose_target).text == "1.0.0"
    page = staff.get(done["Location"])
    assert b'http-equiv="refresh"' not in page.content and b"switch edge" in page.content
    assert b"edge: now serving" in page.content

    staff.post(
        f"/admin/deployments/release/{v2.pk}/deploy/",
        {"environment": "production", "strategy": "rolling", "confirm": "1"},
    )
    run_worker("long")
    assert edge_get(compose_target).text == "2.0.0"
    releases = staff.get("/admin/deployments/release/")
    assert b"production" in releases.content  # "live on" column

    page = staff.get(f"/admin/deployments/deployment/{first.pk}/change/")
    assert b"Roll back to 1.0.0" in page.content
    confirm = staff.get(f"/admin/deployments/deployment/{first.pk}/rollback/")
    assert b"runs 2.0.0 now" in confirm.content
    queued = staff.post(f"/admin/deployments/deployment/{first.pk}/rollback/")
    assert queued.status_code == 302
    run_worker("long")
    assert edge_get(compose_target).text == "1.0.0"
    rollback = Deployment.objects.get(is_rollback=True)
    assert rollback.status == Deployment.Status.SUCCEEDED and rollback.requested_by == "staff:ops"
    assert Target.objects.get(pk=compose_target.pk).live_release == Release.objects.get(version="1.0.0")
    assert AuditEvent.objects.filter(action="rollback.succeeded", actor__contains="staff:ops").exists()


@pytest.mark.slow  # the real Docker Engine
@pytest.mark.django_db(transaction=True)
def test_admin_refuses_bad_input_with_the_reason(staff, compose_target, engine):
    add = staff.post(
        "/admin/deployments/release/add/",
        {
            "version": "1.0",
            "images": '{"web": "platform-test/app:1.0.0"}',
            "notes": "",
            "backward_compatible_migrations": "on",
        },
    )
    assert add.status_code == 200 and b"not a semantic version" in add.content
    add = staff.post(
        "/admin/deployments/release/add/", {"version": "1.0.0", "images": '{"web": "Bad Ref"}', "notes": ""}
    )
    assert b"not a valid image reference" in add.content and not Release.objects.exists()
    incomplete = release_create(version="1.0.0", images={"other": "platform-test/app:1.0.0"}, actor=ACTOR)
    page = staff.post(
        f"/admin/deployments/release/{incomplete.pk}/deploy/",
        {"environment": "production", "strategy": "blue-green", "preview": "1"},
    )
    assert b"has no image for web" in page.content and not Deployment.objects.exists()
    target_page = staff.get(f"/admin/deployments/target/{compose_target.pk}/change/")
    assert b"docker-compose.yml" in target_page.content and b"${TEST_APP_SECRET}" in target_page.content
    assert b"upstream app_web" in target_page.content


@pytest.mark.django_db
def test_only_those_who_may_deploy_see_the_deploy_link():
    from core.roles import OPERATORS, SUPPORT
    from tests.staff import admin_client, admin_url, staff_user

    release_create(version="9.9.9", images={"web": "registry.test/web:9.9.9"}, actor=ACTOR)
    listing = admin_url("admin:deployments_release_changelist")
    assert "Deploy…" in admin_client(staff_user("op", OPERATORS)).get(listing).content.decode()
    page = admin_client(staff_user("sup", SUPPORT)).get(listing)
    assert page.status_code == 200 and "9.9.9" in page.content.decode()
    assert "Deploy…" not in page.content.decode()
