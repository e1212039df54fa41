"""Staff roles: two groups whose permissions are set exactly (extra grants are removed).

"Platform operators" run the platform: plans, tenants, domains, backups of shops, deployments,
alerting, every lifecycle action, the RQ dashboard; they read the audit log. "Platform support" can
look at everything and change nothing. Neither group may manage staff accounts or download
platform-wide backups (SUPERUSER_ONLY): that stays with superusers. Which admin page and action
needs which permission is declared in core.access.
"""

from functools import wraps

from django.apps import apps
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.management import create_contenttypes
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.urls import URLPattern
from django_tenants.utils import get_public_schema_name

from core.db import connection

OPERATORS = "Platform operators"
SUPPORT = "Platform support"

RQ_DASHBOARD_PERMISSION = "django_rq.admin"

# Every model with an admin page: support may look at all of them (and change none).
_VIEW_ONLY = [
    "tenants.view_plan",
    "tenants.view_tenant",
    "tenants.view_domain",
    "core.view_auditevent",
    "tenants.view_schemapoolentry",
    "tenants.view_platformcertificate",  # expiry and errors; the key and chain are never shown
    "backups.view_backup",
    "backups.view_restore",
    "backups.view_restoredrill",
    "backups.view_export",
    "backups.view_offsitecopy",
    "backups.view_disasterrecoverydrill",
    "backups.view_pitrbackup",
    "deployments.view_environment",
    "deployments.view_target",
    "deployments.view_release",
    "deployments.view_deployment",
    "deployments.view_environmentsecret",  # names only: values are never shown
    "monitoring.view_statusdashboard",
    "monitoring.view_alertrule",
    "monitoring.view_channel",
    "monitoring.view_incident",
    "monitoring.view_delivery",
    "monitoring.view_proberesult",
    "axes.view_accessattempt",
    "webhooks.view_endpoint",  # URLs and owners only: secrets are never shown
    "webhooks.view_delivery",
    "api.view_apikey",
]

# Each permission by name, never "all of an app": a new permission reaches a role only when it is
# written here (tests/tenants/test_roles.py fails on a custom permission that is in neither list).
ROLE_PERMISSIONS: dict[str, list[str]] = {
    OPERATORS: [
        *_VIEW_ONLY,
        "tenants.add_plan",
        "tenants.change_plan",
        "tenants.delete_plan",
        # Tenants are created through provisioning and removed through deprovisioning, never by
        # add/delete of the bare row; "change" covers the one direct edit (the shop's name).
        "tenants.change_tenant",
        "tenants.provision_tenant",
        "tenants.suspend_tenant",
        "tenants.resume_tenant",
        "tenants.change_tenant_plan",
        "tenants.deprovision_tenant",
        "tenants.issue_owner_link",
        "tenants.add_domain",
        "tenants.change_domain",
        "tenants.delete_domain",
        "tenants.verify_domain",
        "tenants.issue_certificate",
        "tenants.issue_platform_certificate",
        "tenants.disable_domain",
        "tenants.enable_domain",
        # Backups of one shop: take, verify, drill, restore, download (also its exports).
        "backups.add_backup",
        "backups.verify_backup",
        "backups.run_restore_drill",
        "backups.restore_backup",
        "backups.download_backup",
        "backups.copy_offsite",  # off-site copies: verify, copy again
        "backups.run_dr_drill",
        "backups.restore_to_time",  # a shop to a moment (PITR)
        "deployments.add_environment",
        "deployments.change_environment",
        "deployments.delete_environment",
        "deployments.add_target",
        "deployments.change_target",
        "deployments.delete_target",
        "deployments.add_release",
        "deployments.change_release",
        "deployments.delete_release",
        "deployments.deploy_release",
        "deployments.rollback_release",
        "monitoring.change_alertrule",
        "monitoring.add_channel",
        "monitoring.change_channel",
        "monitoring.delete_channel",
        "monitoring.send_test_alert",
        "monitoring.acknowledge_incident",
        "monitoring.resolve_incident",
        "deployments.add_environmentsecret",
        "deployments.change_environmentsecret",
        "deployments.delete_environmentsecret",
        "axes.delete_accessattempt",  # lift a login lockout
        "webhooks.add_endpoint",
        "webhooks.change_endpoint",
        "webhooks.delete_endpoint",
        "webhooks.resend_delivery",
        # API keys for the SaaS's backend and CI: every scope maps to something operators may do.
        "api.add_apikey",
        "api.revoke_apikey",
        RQ_DASHBOARD_PERMISSION,
    ],
    SUPPORT: list(_VIEW_ONLY),
}

# Custom permissions no group gets: superusers hold them, or a superuser grants one to a person.
SUPERUSER_ONLY: dict[str, str] = {
    "backups.download_platform_backup": "platform and whole-database dumps hold every staff "
    "account's password hash: whoever downloads one can become superuser",
}

def may_change_anything(user) -> bool:
    """True when the user holds any permission beyond looking (Django's ``view_`` ones), through a
    group or granted directly."""
    return any(not perm.partition(".")[2].startswith("view_") for perm in user.get_all_permissions())


# Apps whose permissions are checked against the lists above (custom ones must be classified).
ROLE_APPS = (
    "tenants", "core", "backups", "deployments", "monitoring", "django_rq", "axes", "otp_totp", "webhooks",
    "api",
)


def _ensure_permission_rows() -> None:
    # post_migrate may reach us before auth's own handler has created this app's permissions.
    for label in ROLE_APPS:
        app_config = apps.get_app_config(label)
        create_contenttypes(app_config, verbosity=0)
        create_permissions(app_config, verbosity=0)


def _permission(dotted: str) -> Permission:
    app_label, codename = dotted.split(".", 1)
    try:
        return Permission.objects.get(content_type__app_label=app_label, codename=codename)
    except Permission.DoesNotExist:
        raise RuntimeError(
            f"Permission {dotted} does not exist; run `manage.py migrate_schemas` first."
        ) from None


def roles_sync() -> dict[str, int]:
    """Create or correct both groups; return each group's permission count. Idempotent."""
    if connection.schema_name != get_public_schema_name():
        # Tenant schemas have their own auth tables (shop owners); staff roles live in public.
        return {}
    _ensure_permission_rows()
    counts = {}
    with transaction.atomic():
        for name, dotted_names in ROLE_PERMISSIONS.items():
            group, _ = Group.objects.get_or_create(name=name)
            permissions = [_permission(dotted) for dotted in dotted_names]
            group.permissions.set(permissions)
            counts[name] = len(permissions)
    return counts


def roles_sync_after_migrate(sender, using="default", **kwargs) -> None:
    roles_sync()


def rq_dashboard_guard(view):
    """The RQ dashboard can empty queues and delete jobs: operators only, not every staff user."""

    @wraps(view)
    def guarded(request, *args, **kwargs):
        user = request.user
        # Anonymous users fall through to the view's own redirect to the login page.
        if user.is_authenticated and not user.has_perm(RQ_DASHBOARD_PERMISSION):
            raise PermissionDenied("The job dashboard is for platform operators.")
        return view(request, *args, **kwargs)

    return guarded


def rq_guarded_urlpatterns(patterns: list) -> list:
    return [
        URLPattern(p.pattern, rq_dashboard_guard(p.callback), p.default_args, p.name)
        if isinstance(p, URLPattern)
        else p
        for p in patterns
    ]
