"""Staff roles (exact permissions, kept in step by migrate and seed_demo) and deploy security."""

import secrets
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.core.management.sql import emit_post_migrate_signal
from django.db import connection

from core.roles import OPERATORS, ROLE_APPS, ROLE_PERMISSIONS, SUPERUSER_ONLY, SUPPORT, roles_sync
from tenants.models import Tenant
from tests.conftest import BASE_DIR, subprocess_env
from tests.staff import staff_user

ACTION_PERMISSIONS = {
    "tenants.provision_tenant", "tenants.suspend_tenant", "tenants.resume_tenant",
    "tenants.change_tenant_plan", "tenants.deprovision_tenant", "tenants.issue_owner_link",
    "tenants.verify_domain", "tenants.issue_certificate", "tenants.disable_domain",
    "tenants.issue_platform_certificate",
    "tenants.enable_domain", "backups.add_backup", "backups.verify_backup", "backups.run_restore_drill",
    "backups.restore_backup", "backups.download_backup", "deployments.deploy_release",
    "deployments.rollback_release", "monitoring.send_test_alert", "monitoring.acknowledge_incident",
    "monitoring.resolve_incident", "backups.copy_offsite", "backups.run_dr_drill", "backups.restore_to_time",
    "webhooks.resend_delivery",
    "api.revoke_apikey",
}
VIEW_PERMISSIONS = {
    "tenants.view_plan", "tenants.view_tenant", "tenants.view_domain", "core.view_auditevent",
    "tenants.view_schemapoolentry", "tenants.view_platformcertificate",
    "backups.view_backup", "backups.view_restore",
    "backups.view_restoredrill", "backups.view_export", "backups.view_pitrbackup",
    "deployments.view_environment",
    "deployments.view_target", "deployments.view_release", "deployments.view_deployment",
    "monitoring.view_statusdashboard", "monitoring.view_alertrule", "monitoring.view_channel",
    "monitoring.view_incident", "monitoring.view_delivery", "monitoring.view_proberesult",
    "deployments.view_environmentsecret", "axes.view_accessattempt", "backups.view_offsitecopy",
    "backups.view_disasterrecoverydrill",
    "webhooks.view_endpoint", "webhooks.view_delivery",
    "api.view_apikey",
}
EDIT_PERMISSIONS = {
    "tenants.add_plan", "tenants.change_plan", "tenants.delete_plan", "tenants.change_tenant",
    "tenants.add_domain", "tenants.change_domain", "tenants.delete_domain", "django_rq.admin",
    *(f"deployments.{verb}_{model}" for verb in ("add", "change", "delete")
      for model in ("environment", "target", "release", "environmentsecret")),
    "monitoring.change_alertrule", "monitoring.add_channel", "monitoring.change_channel",
    "monitoring.delete_channel", "axes.delete_accessattempt",
    "webhooks.add_endpoint", "webhooks.change_endpoint", "webhooks.delete_endpoint",
    "api.add_apikey",
}


def group_permissions(name: str) -> set[str]:
    return {
        f"{p.content_type.app_label}.{p.codename}"
        for p in Group.objects.get(name=name).permissions.select_related("content_type")
    }


def test_groups_get_exactly_their_permissions(db):
    counts = roles_sync()
    operators = VIEW_PERMISSIONS | ACTION_PERMISSIONS | EDIT_PERMISSIONS
    assert counts == {OPERATORS: len(operators), SUPPORT: len(VIEW_PERMISSIONS)}
    assert group_permissions(SUPPORT) == VIEW_PERMISSIONS
    assert group_permissions(OPERATORS) == operators
    # Neither role can touch staff accounts (no privilege escalation) or rewrite the audit trail,
    # and neither downloads platform dumps (they hold the staff password hashes).
    for name in (OPERATORS, SUPPORT):
        perms = group_permissions(name)
        assert not {p for p in perms if p.startswith("auth.")}
        assert {p for p in perms if p.endswith("_auditevent")} == {"core.view_auditevent"}
        assert "backups.download_platform_backup" not in perms
    assert not Permission.objects.filter(codename__in=["change_auditevent", "delete_auditevent",
                                                      "add_auditevent"]).exists()


def test_every_custom_permission_is_given_to_a_role_or_kept_for_superusers(db):
    # A new Meta.permissions entry must be placed by hand: nobody gets a sensitive one by accident.
    roles_sync()
    granted = set().union(*map(set, ROLE_PERMISSIONS.values()))
    defaults = ("add_", "change_", "delete_", "view_")
    custom = {
        f"{p.content_type.app_label}.{p.codename}"
        for p in Permission.objects.filter(content_type__app_label__in=ROLE_APPS).select_related(
            "content_type")
        if not p.codename.startswith(defaults)
    }
    assert custom - granted - set(SUPERUSER_ONLY) == set()
    assert not granted & set(SUPERUSER_ONLY)
    assert {"backups.download_platform_backup", "deployments.deploy_release"} <= custom


def test_sync_removes_extra_grants_and_is_idempotent(db):
    roles_sync()
    support = Group.objects.get(name=SUPPORT)
    support.permissions.add(Permission.objects.get(codename="change_user"),
                            Permission.objects.get(codename="deprovision_tenant"))
    roles_sync()
    roles_sync()
    assert group_permissions(SUPPORT) == VIEW_PERMISSIONS
    assert Group.objects.filter(name__in=[OPERATORS, SUPPORT]).count() == 2


def test_users_inherit_role_permissions(db):
    operator, support = staff_user("olivia", OPERATORS), staff_user("sam", SUPPORT)
    operator = get_user_model().objects.get(pk=operator.pk)  # fresh permission cache
    assert all(operator.has_perm(p) for p in ACTION_PERMISSIONS)
    assert not any(support.has_perm(p) for p in ACTION_PERMISSIONS | {"tenants.change_tenant"})
    assert all(support.has_perm(p) for p in VIEW_PERMISSIONS)


def test_migrate_resyncs_the_roles(db):
    Group.objects.filter(name__in=[OPERATORS, SUPPORT]).delete()
    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")
    assert group_permissions(SUPPORT) == VIEW_PERMISSIONS
    assert ACTION_PERMISSIONS <= group_permissions(OPERATORS)


def test_sync_roles_command(db, capsys):
    call_command("sync_roles")
    operators = len(VIEW_PERMISSIONS | ACTION_PERMISSIONS | EDIT_PERMISSIONS)
    support = len(VIEW_PERMISSIONS)
    assert capsys.readouterr().out.strip() == (
        f"Roles synced: Platform operators ({operators} permissions), "
        f"Platform support ({support} permissions)"
    )


@pytest.mark.django_db(transaction=True)
def test_roles_never_land_in_a_tenant_schema(make_tenant):
    tenant = make_tenant("acme")
    connection.set_tenant(tenant)
    try:
        assert roles_sync() == {}
        assert not Group.objects.filter(name__in=[OPERATORS, SUPPORT]).exists()  # the shop's own auth
    finally:
        connection.set_schema_to_public()
    assert Group.objects.filter(name__in=[OPERATORS, SUPPORT]).count() == 2


@pytest.mark.django_db(transaction=True)
def test_seed_demo_creates_the_roles_and_a_support_login(tmp_path, capsys):
    password_file = tmp_path / "password"
    call_command("seed_demo", password_file=str(password_file))
    password = password_file.read_text().strip()
    support = get_user_model().objects.get(username="support")
    assert support.is_staff and not support.is_superuser and support.check_password(password)
    assert list(support.groups.values_list("name", flat=True)) == [SUPPORT]
    assert not support.has_perm("tenants.suspend_tenant") and support.has_perm("tenants.view_tenant")
    assert get_user_model().objects.get(username="admin").is_superuser
    # Its existing behaviour is kept: three active shops.
    assert Tenant.objects.filter(status=Tenant.Status.ACTIVE).count() == 3
    assert "Demo data ready: 3 plans, 3 shops." in capsys.readouterr().out


# -- manage.py check --deploy ------------------------------------------------------------------


def check_deploy(**env: str) -> subprocess.CompletedProcess:
    environment = subprocess_env()
    # A production environment: none of the development or test switches (the browser tests'
    # DJANGO_ALLOW_ASYNC_UNSAFE included, which the deploy check rightly rejects).
    for name in ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE",
                 "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS", "SECURE_HSTS_PRELOAD",
                 "DJANGO_ALLOW_ASYNC_UNSAFE"):
        environment.pop(name, None)
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=60,
    )


def test_check_deploy_is_clean_with_production_settings(db):
    result = check_deploy(SECRET_KEY=secrets.token_urlsafe(64),
                          ALLOWED_HOSTS="platform.example.com,.shops.example.com")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_check_deploy_flags_development_settings(db):
    # The same check fails loudly on a development setup, so the clean result above means something.
    result = check_deploy(DEBUG="1", SECRET_KEY="short")
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W009", "security.W012",
                    "security.W016", "security.W018"):
        assert warning in result.stderr, warning


def test_production_refuses_to_start_without_a_secret_key(db):
    result = check_deploy(ALLOWED_HOSTS="platform.example.com")
    assert result.returncode != 0
    assert "Set the SECRET_KEY environment variable" in result.stderr
