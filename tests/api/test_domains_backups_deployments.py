"""Domains, backups (with restore only for keys that have backups:restore) and deployments, through
the staff API and the real workers."""

from urllib.parse import urlsplit

import pytest

from backups.models import Backup, Restore
from core.models import AuditEvent
from deployments.models import Deployment, DeploymentLogLine, DeploymentStep, Environment, Release, Target
from tenants.models import Domain
from tests.api.conftest import ALL_SCOPES, is_problem

pytestmark = pytest.mark.django_db(transaction=True)


def test_domains_through_the_staff_api_share_the_self_service_rules(api_server, staff_key, make_tenant):
    make_tenant("acme")
    make_tenant("globex")
    api = api_server(CUSTOM_DOMAIN_CHECK_NOW_SECONDS="60")
    token = staff_key().token
    added = api.post("/api/v1/tenants/acme/domains", {"domain": "Shop.Example.test"}, token=token)
    assert added.status_code == 201, added.text
    domain = added.json()
    assert domain["domain"] == "shop.example.test" and domain["status"] == "pending_verification"
    records = {r["type"]: r for r in domain["dns_records"]}
    row = Domain.objects.get(domain="shop.example.test")
    assert records["TXT"]["name"] == "_platform-verify.shop.example.test"
    assert records["TXT"]["value"] == row.verification_token
    assert records["CNAME"]["value"] == "acme.platform.test" and domain["certificate"] is None
    # The same refusals, in the same words, as the owner's page.
    taken = api.post("/api/v1/tenants/globex/domains", {"domain": "shop.example.test"}, token=token)
    assert "already in use" in is_problem(taken, 409)["detail"]
    mine = api.post("/api/v1/tenants/acme/domains", {"domain": "shop.example.test"}, token=token)
    assert "already on your list" in is_problem(mine, 422)["detail"]
    own = api.post("/api/v1/tenants/acme/domains", {"domain": "x.platform.test"}, token=token)
    assert "platform's own domain" in is_problem(own, 422)["detail"]
    listed = api.get("/api/v1/tenants/acme/domains", token=token).json()
    assert listed["used"] == 1 and listed["plan_allows"] == 3 and len(listed["items"]) == 2
    got = api.get("/api/v1/tenants/acme/domains/shop.example.test", token=token)
    assert got.json()["dns_records"] == domain["dns_records"]
    is_problem(api.get("/api/v1/tenants/globex/domains/shop.example.test", token=token), 404)

    check = api.post("/api/v1/tenants/acme/domains/shop.example.test/check", token=token)
    assert check.status_code == 202 and check.json()["status"] == "queued"
    assert api.get("/api/v1/tenants/acme/domains/shop.example.test", token=token).json()["checking"] is True
    again = api.post("/api/v1/tenants/acme/domains/shop.example.test/check", token=token)
    assert "checked a moment ago" in is_problem(again, 429)["detail"] and again.headers["Retry-After"] == "60"
    primary = api.post("/api/v1/tenants/acme/domains/shop.example.test/primary", token=token)
    assert "only an active domain can be primary" in is_problem(primary, 409)["detail"]
    platform = api.delete("/api/v1/tenants/acme/domains/acme.platform.test", token=token)
    assert "cannot be removed" in is_problem(platform, 422)["detail"]
    assert api.delete("/api/v1/tenants/acme/domains/shop.example.test", token=token).status_code == 204
    assert not Domain.objects.filter(domain="shop.example.test").exists()
    assert set(AuditEvent.objects.filter(target="shop.example.test").values_list("action", flat=True)) == {
        "domain.added", "domain.removed"}


@pytest.mark.slow  # backup, export and restore by the real workers
def test_backups_exports_and_restore_need_their_scopes(api_server, staff_key, make_tenant, run_backup_worker,
                                                       run_worker, backup_dir):
    make_tenant("acme")
    api = api_server(BACKUP_STORAGE="local", BACKUP_LOCAL_DIR=str(backup_dir))
    writer = staff_key()  # the default scopes: everything but backups:restore
    queued = api.post("/api/v1/tenants/acme/backups", token=writer.token)
    assert queued.status_code == 202, queued.text
    busy = api.post("/api/v1/tenants/acme/backups", token=writer.token)
    assert "already queued or running" in is_problem(busy, 409)["detail"]
    run_backup_worker()
    backup = api.get(queued.json()["status_url"], token=writer.token).json()
    assert backup["status"] == "verified" and len(backup["sha256"]) == 64 and backup["size_bytes"] > 0
    listed = api.get("/api/v1/tenants/acme/backups", token=writer.token).json()
    assert [b["id"] for b in listed] == [backup["id"]]

    export = api.post("/api/v1/tenants/acme/exports", token=writer.token)
    assert export.status_code == 202
    assert api.get(export.json()["status_url"], token=writer.token).json()["download_url"] is None
    run_backup_worker()
    ready = api.get(export.json()["status_url"], token=writer.token).json()
    assert ready["status"] == "ready" and ready["download_expires_in_seconds"] == 900
    link = urlsplit(ready["download_url"])
    assert link.netloc == "admin.platform.test"
    archive = api.get(f"{link.path}?{link.query}", token=None)  # the link is the credential
    assert archive.status_code == 200 and archive.content[:2] == b"\x1f\x8b"  # gzip
    forged = api.get(f"{link.path}?{link.query[:-3]}abc", token=None)
    assert "invalid or has expired" in is_problem(forged, 404)["detail"]
    assert AuditEvent.objects.filter(action="export.link_issued", actor_type="api_key").count() == 1

    # Restore: not with the default scopes; with backups:restore, queued and run by the worker.
    body = {"backup_id": backup["id"], "confirm_subdomain": "acme"}
    assert "backups:restore" in is_problem(api.post("/api/v1/tenants/acme/restore", body, token=writer.token),
                                           403)["detail"]
    operator = staff_key(ALL_SCOPES, name="restorer")
    typo = api.post("/api/v1/tenants/acme/restore", {**body, "confirm_subdomain": "acne"},
                    token=operator.token)
    assert "does not match" in is_problem(typo, 422)["detail"]
    assert Restore.objects.count() == 0
    started = api.post("/api/v1/tenants/acme/restore", body, token=operator.token)
    assert started.status_code == 202, started.text
    run_worker("long")
    run_backup_worker()
    restore = Restore.objects.get()
    assert restore.status == "succeeded", restore.status_reason
    assert Backup.objects.filter(purpose="safety").exists()


def test_releases_and_deployments_refuse_with_what_to_fix_and_show_steps(api_server, staff_key):
    api = api_server()
    token = staff_key().token
    release = {"version": "1.4.0", "images": {"backend": "registry.example/api:1.4.0"}, "git_sha": "abc1234"}
    created = api.post("/api/v1/releases", release, token=token)
    assert created.status_code == 201, created.text
    assert created.json()["images"] == release["images"]
    assert "immutable" in is_problem(api.post("/api/v1/releases", release, token=token), 422)["detail"]
    bad = api.post("/api/v1/releases", {**release, "version": "1.5.0", "images": {"backend": "no tag!"}},
                   token=token)
    assert is_problem(bad, 422)
    assert api.get("/api/v1/releases/1.4.0", token=token).json()["git_sha"] == "abc1234"
    unknown = api.post("/api/v1/deployments", {"environment": "production", "version": "1.4.0"}, token=token)
    assert "No environment named 'production'" in is_problem(unknown, 422)["detail"]
    plan_only = api.post("/api/v1/deployments", {"environment": "production", "version": "1.4.0",
                                                 "plan_only": True}, token=token)
    assert is_problem(plan_only, 422)
    strategy = api.post("/api/v1/deployments", {"environment": "production", "version": "1.4.0",
                                                "strategy": "yolo"}, token=token)
    assert is_problem(strategy, 422)["errors"][0]["field"] == "strategy"
    assert "No environment named 'staging'" in is_problem(
        api.post("/api/v1/rollbacks", {"environment": "staging"}, token=token), 422)["detail"]

    # A deployment's steps and log lines, as CI follows them.
    environment = Environment.objects.create(name="staging")
    target = Target.objects.create(environment=environment, name="staging-host")
    deployment = Deployment.objects.create(target=target, release=Release.objects.get(version="1.4.0"),
                                           status=Deployment.Status.SUCCEEDED)
    step = DeploymentStep.objects.create(deployment=deployment, name="pull images", status="succeeded")
    DeploymentLogLine.objects.create(step=step, text="pulled registry.example/api:1.4.0")
    shown = api.get(f"/api/v1/deployments/{deployment.pk}", token=token).json()
    assert shown["status"] == "succeeded" and shown["environment"] == "staging"
    assert shown["steps"] == [{"name": "pull images", "status": "succeeded", "started_at": shown["steps"][0][
        "started_at"], "finished_at": None, "lines": ["pulled registry.example/api:1.4.0"]}]
    # The target is checked before anything is planned: the refusal names what to add.
    back = api.post("/api/v1/rollbacks", {"environment": "staging"}, token=token)
    assert "is not in the secret store of 'staging'" in is_problem(back, 422)["detail"]
