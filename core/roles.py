"""Staff roles: two groups whose permissions are set exactly (extra grants are removed).

"Platform operators" run the platform: plans, tenants, domains, every lifecycle action, the RQ
dashboard; they read the audit log. "Platform support" can look at everything and change nothing.
Neither group may manage staff accounts: that stays with superusers.
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

_VIEW_ONLY = [
    "tenants.view_plan",
    "tenants.view_tenant",
    "tenants.view_domain",
    "core.view_auditevent",
    "tenants.view_schemapoolentry",
]

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
        RQ_DASHBOARD_PERMISSION,
        *(f"deployments.{verb}_environmentsecret" for verb in ("add", "change", "delete")),
    ],
    SUPPORT: list(_VIEW_ONLY),
}


# The other areas' apps: operators hold all their permissions, support only the view ones.
AREA_APPS = ("backups", "deployments", "monitoring")


def _area_permissions(*, view_only: bool) -> list[Permission]:
    permissions = Permission.objects.filter(content_type__app_label__in=AREA_APPS)
    if view_only:
        permissions = permissions.filter(codename__startswith="view_")
    return list(permissions)


def _ensure_permission_rows() -> None:
    # post_migrate may reach us before auth's own handler has created this app's permissions.
    for label in ("tenants", "core", "django_rq", *AREA_APPS):
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
            permissions += _area_permissions(view_only=name != OPERATORS)
            group.permissions.set(permissions)
            counts[name] = len(set(permissions))
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
