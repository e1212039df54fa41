"""Every page and admin action of the control plane against the declared matrix (core.access).

The walker reads platform_site.urls_public (the admin with every ModelAdmin's own URLs and custom
views, django-rq's guarded dashboard) and every registered admin action; anything not declared in
core.access fails here. Then each role (staff in no group, support, operators, superuser) asks
for every page through the test client with real users and groups, and runs every action: what
the matrix and core.roles say must be exactly what the admin does. A denied POST changes nothing.
"""

import re
from dataclasses import dataclass
from datetime import timedelta

import django_rq
import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.options import ModelAdmin
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.forms.models import model_to_dict
from django.test import RequestFactory
from django.urls import URLPattern, URLResolver, path, reverse
from django.utils import timezone
from django.utils.module_loading import import_string

from core import access
from core.audit import Action, Actor
from core.models import AuditEvent
from core.roles import OPERATORS, SUPPORT
from tests.staff import admin_client, staff_user

URLCONF = settings.PUBLIC_SCHEMA_URLCONF
STANDARD_PAGES = ("changelist", "add", "history", "delete", "change")
# Declared, never requested: their answer does not depend on a permission, or asking ends the session.
NOT_REQUESTED = {"admin:login", "admin:logout", "tls_ask"}
# Tables of their own they have not (a page, not rows): their object pages cannot be asked for.
UNMANAGED = {"monitoring.statusdashboard", "django_rq.dashboard"}
QUEUES = ("default", "long", "backups")


# -- the walker ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    route: str
    name: str | None  # namespace:name
    params: tuple[str, ...]


def walk(patterns, prefix: str = "", namespace: str = "", params: tuple[str, ...] = ()) -> list[Route]:
    found = []
    for p in patterns:
        names = tuple(p.pattern.regex.groupindex)
        if isinstance(p, URLResolver):
            ns = ":".join(filter(None, [namespace, p.namespace or ""]))
            found += walk(p.url_patterns, prefix + str(p.pattern), ns, params + names)
        elif isinstance(p, URLPattern):
            name = f"{namespace}:{p.name}" if namespace and p.name else p.name
            found.append(Route(prefix + str(p.pattern), name, params + names))
    return found


def standard_pages() -> dict[str, tuple[str, str]]:
    """URL name of each ModelAdmin standard page -> (model, page)."""
    return {
        f"admin:{model.replace('.', '_')}_{page}": (model, page)
        for model in access.MODEL_PAGES
        for page in STANDARD_PAGES
    }


DETAIL_REDIRECT = re.compile(r"^admin/(?P<app>\w+)/(?P<model>\w+)/<path:object_id>/$")


def page_needs(route: Route) -> str | None:
    """What the matrix says this URL needs (for a GET), or None when it is not declared."""
    if route.name is None:
        if route.route in access.UNNAMED_VIEWS:
            return access.UNNAMED_VIEWS[route.route].needs
        match = DETAIL_REDIRECT.match(route.route)
        if match and f"{match['app']}.{match['model']}" in access.MODEL_PAGES:
            return access.UNNAMED_VIEWS["admin/<app>/<model>/<path:object_id>/"].needs
        return None
    if route.name in access.VIEWS:
        return access.VIEWS[route.name].needs
    if route.name.split(":")[0] in access.API_NAMESPACES:
        return access.API_NAMESPACES[route.name.split(":")[0]].needs
    standard = standard_pages().get(route.name)
    if standard is None:
        return None
    model, page = standard
    pages = access.MODEL_PAGES[model]
    return {"add": pages.add, "delete": pages.delete}.get(page, pages.view)


def undeclared_views(patterns) -> list[str]:
    return [f"{r.route} ({r.name or 'unnamed'})" for r in walk(patterns) if page_needs(r) is None]


def registered_actions(site) -> dict[str, tuple[ModelAdmin, object]]:
    """'<app>.<model>.<action>' -> (its ModelAdmin, the action function), for every action."""
    found = {}
    for model, model_admin in site._registry.items():
        if model_admin.actions is None:  # switched off, Django's delete_selected too
            continue
        for func, name, _ in model_admin._get_base_actions():
            found[f"{model._meta.label_lower}.{name}"] = (model_admin, func)
    return found


def undeclared_actions(site) -> list[str]:
    problems = []
    for key, (_, func) in registered_actions(site).items():
        if access.action_needs(key) is None:
            problems.append(f"{key}: not in core.access.ACTIONS")
        if not getattr(func, "allowed_permissions", ()):
            # Django shows an action without permissions= to everyone who may view the list.
            problems.append(f"{key}: declares no permissions=")
    return problems


# -- the structure ---------------------------------------------------------------------------------


def urlpatterns():
    return import_string(f"{URLCONF}.urlpatterns")


def test_every_page_and_action_is_declared_in_the_matrix():
    assert undeclared_views(urlpatterns()) == []
    assert undeclared_actions(admin.site) == []
    registered = {m._meta.label_lower for m in admin.site._registry}
    assert set(access.MODEL_PAGES) == registered, "MODEL_PAGES must name exactly the registered models"
    stale = {key for key in access.ACTIONS if key not in registered_actions(admin.site)}
    assert stale == set(), "ACTIONS names actions that no longer exist"
    named = {r.name for r in walk(urlpatterns())}
    assert {name for name in access.VIEWS if name not in named} == set(), "VIEWS names unknown URLs"


def sneaky_view(request):
    raise AssertionError("never requested")


@admin.action(description="Do something sneaky")
def sneaky_action(modeladmin, request, queryset):
    raise AssertionError("never run")


def test_the_walker_flags_a_new_view_or_action_that_is_not_declared(monkeypatch):
    extra = [path("admin-extra/", sneaky_view, name="sneaky"), path("admin-extra/x/", sneaky_view)]
    assert undeclared_views([*urlpatterns(), *extra]) == [
        "admin-extra/ (sneaky)", "admin-extra/x/ (unnamed)"
    ]
    plan_admin = admin.site._registry[import_string("tenants.models.Plan")]
    monkeypatch.setattr(plan_admin, "actions", [sneaky_action])
    assert undeclared_actions(admin.site) == [
        "tenants.plan.sneaky_action: not in core.access.ACTIONS",
        "tenants.plan.sneaky_action: declares no permissions=",
    ]
    # Declared but still without permissions= (visible to support): flagged all the same.
    monkeypatch.setitem(access.ACTIONS, "tenants.plan.sneaky_action", access.Entry("tenants.change_plan", ""))
    assert undeclared_actions(admin.site) == ["tenants.plan.sneaky_action: declares no permissions="]


# -- the roles, through the test client ------------------------------------------------------------


@pytest.fixture
def world(make_tenant):
    """One row of every model that has admin pages (their object pages need one)."""
    from axes.models import AccessAttempt
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from backups.models import (
        Backup,
        DisasterRecoveryDrill,
        Export,
        OffsiteCopy,
        PitrBackup,
        Restore,
        RestoreDrill,
    )
    from deployments.models import Deployment, Environment, Release, Target
    from deployments.secrets import environment_secret_set
    from monitoring.models import AlertRule, Delivery, Incident, ProbeResult
    from monitoring.services import channels
    from tenants.models import Domain, Plan, PlatformCertificate, SchemaPoolEntry
    from webhooks.models import Delivery as WebhookDelivery
    from webhooks.models import Message
    from webhooks.services import endpoint_create

    tenant = make_tenant("matrix")
    actor = Actor.command("pytest")
    domain = Domain.objects.create(
        domain="shop.matrix.test", tenant=tenant, kind=Domain.Kind.CUSTOM, status=Domain.Status.ACTIVE,
        is_primary=False,
    )
    now = timezone.now()
    backup = Backup.objects.create(
        kind=Backup.Kind.TENANT, tenant=tenant, tenant_label="matrix", status=Backup.Status.VERIFIED,
        storage="local", location="matrix/one.dump", schema_name=tenant.schema_name,
    )
    platform_backup = Backup.objects.create(
        kind=Backup.Kind.PLATFORM, status=Backup.Status.VERIFIED, storage="local", location="platform.dump",
    )
    environment = Environment.objects.create(name="matrix-env")
    target = Target.objects.create(environment=environment, name="matrix-target")
    release = Release.objects.create(version="1.0.0", images={"web": "registry.test/web:1.0.0"})
    # The built-in rules may be gone: a transactional test before this one flushed the tables.
    rule, _ = AlertRule.objects.get_or_create(
        kind=AlertRule.Kind.CERTIFICATE_EXPIRING, defaults={"threshold": 14}
    )
    channel = channels.channel_create(
        name="matrix-hook", kind="webhook", target="https://hooks.matrix.test/alert",
        secret="s" * 24, actor=actor,
    )
    incident = Incident.objects.create(rule=rule, dedup_key="matrix", title="Matrix", severity="warning")
    rows = {
        "tenants.plan": Plan.objects.first(),
        "tenants.tenant": tenant,
        "tenants.domain": domain,
        "tenants.schemapoolentry": SchemaPoolEntry.objects.create(schema_name="_pool_matrix"),
        "tenants.platformcertificate": PlatformCertificate.objects.create(base_domain="matrix.test"),
        "core.auditevent": AuditEvent.objects.first(),
        "backups.backup": backup,
        "backups.restore": Restore.objects.create(tenant=tenant, backup=backup, mode="in_place",
                                                  status="succeeded"),
        "backups.restoredrill": RestoreDrill.objects.create(backup=backup, backup_label="matrix"),
        "backups.export": Export.objects.create(tenant=tenant, tenant_label="matrix", status="ready",
                                                storage="local", location="matrix/export.tar.gz",
                                                expires_at=now + timedelta(days=1)),
        "backups.offsitecopy": OffsiteCopy.objects.create(
            backup=backup, kind="tenant", tenant=tenant, tenant_label="matrix", source_created_at=now,
            source_ready_at=now, location=backup.location, sha256="0" * 64, status="verified",
        ),
        "backups.disasterrecoverydrill": DisasterRecoveryDrill.objects.create(trigger="command", passed=True),
        "backups.pitrbackup": PitrBackup.objects.create(type="full", status="succeeded", label="matrix"),
        "deployments.environment": environment,
        "deployments.target": target,
        "deployments.release": release,
        "deployments.environmentsecret": environment_secret_set(
            environment=environment, name="APP_MATRIX_TOKEN", value="t" * 24, actor=actor
        ),
        "deployments.deployment": Deployment.objects.create(target=target, release=release,
                                                            status="succeeded"),
        "monitoring.alertrule": rule,
        "monitoring.channel": channel,
        "monitoring.incident": incident,
        "monitoring.delivery": Delivery.objects.create(channel=channel, incident=incident, event="trigger"),
        "monitoring.proberesult": ProbeResult.objects.create(host="shop.matrix.test", tenant=tenant, ok=True,
                                                             checked_at=now),
    }
    endpoint = endpoint_create(url="https://hooks.matrix.test/in", tenant=tenant, actor=actor).endpoint
    message = Message.objects.create(id="msg_matrix", type="tenant.suspended", tenant=tenant, payload={})
    rows["webhooks.endpoint"] = endpoint
    rows["webhooks.delivery"] = WebhookDelivery.objects.create(
        message=message, endpoint=endpoint, event_type="tenant.suspended", status="failed"
    )
    users = {
        "staff in no group": staff_user("nogroup"),
        SUPPORT: staff_user("support", SUPPORT),
        OPERATORS: staff_user("operator", OPERATORS),
        "superuser": staff_user("root", superuser=True),
    }
    rows["auth.user"] = users["staff in no group"]
    from api.services import apikey_create

    rows["api.apikey"] = apikey_create(name="matrix", scopes=["tenants:read"], actor=actor).key
    rows["axes.accessattempt"] = AccessAttempt.objects.create(
        username="public/someone", ip_address="192.0.2.7", failures_since_start=1
    )
    rows["otp_totp.totpdevice"] = TOTPDevice.objects.create(
        user=staff_user("enrolled"), name="phone"  # not a role's user: a device makes a login need its code
    )
    rows["auth.group"] = users[SUPPORT].groups.first()
    return rows, users, platform_backup


PARAMS = {
    "app_label": "tenants", "queue_index": 0, "scheduler_index": 0, "connection_index": 0,
    "job_id": "no-such-job", "result_id": "no-such-result", "key": "no-such-worker",
    "scheduler_name": "no-such-scheduler", "cron_job_name": "no-such-cron", "token": "x",
    "rest": "no-such-endpoint",
}


def model_of(name: str) -> str | None:
    for model in access.MODEL_PAGES:
        if name.startswith(f"admin:{model.replace('.', '_')}_"):
            return model
    return None


def url_for(route: Route, rows) -> str | None:
    kwargs = {}
    for param in route.params:
        if param in ("object_id", "pk", "id"):
            model = model_of(route.name)
            if model in UNMANAGED:
                return None
            kwargs[param] = rows[model or "tenants.plan"].pk  # view_on_site: a plan will do
        elif param == "tenant_id":
            kwargs[param] = rows["tenants.tenant"].pk
        elif param == "content_type_id":
            kwargs[param] = ContentType.objects.get_for_model(rows["tenants.plan"]).pk
        else:
            kwargs[param] = PARAMS[param]
    return reverse(route.name, urlconf=URLCONF, kwargs=kwargs)


def denied(response) -> bool:
    # Anonymous visitors are sent to the login page; every staff login gets a 403.
    return response.status_code == 403


def state(rows, model: str | None) -> tuple:
    queues = tuple(django_rq.get_queue(name).count for name in QUEUES)
    row = rows.get(model)
    snapshot = model_to_dict(type(row).objects.get(pk=row.pk)) if row is not None else None
    changes = AuditEvent.objects.exclude(action=Action.STAFF_ACCESS_DENIED).count()
    return changes, queues, repr(snapshot)


# About 1,000 rendered admin pages (20-30 s): the quick loop keeps the declaration test above,
# which is what fails first on a new page or action.
@pytest.mark.slow
def test_each_role_may_do_exactly_what_the_matrix_says(world, django_capture_on_commit_callbacks):
    rows, users, _ = world
    # API endpoints take API keys, not staff logins: tests/api/ tries every one with every scope.
    routes = [r for r in walk(urlpatterns()) if r.name and r.name not in NOT_REQUESTED
              and r.name.split(":")[0] not in access.API_NAMESPACES]
    mismatches = []
    for role, user in users.items():
        user = get_user_model().objects.get(pk=user.pk)
        perms, superuser = user.get_all_permissions(), user.is_superuser
        client = admin_client(user)
        client.raise_request_exception = False  # a 500 past the permission check still means "reached"
        for route in routes:
            needs = page_needs(route)
            url = url_for(route, rows)
            if url is None:
                continue
            expected = access.may(needs, permissions=perms, superuser=superuser)
            got = not denied(client.get(url))
            if got != expected:
                mismatches.append(f"{role}: GET {url} needs {needs}: expected {expected}, got {got}")
        # Saving each detail page (an empty form: nothing is saved even where allowed).
        for model, pages in access.MODEL_PAGES.items():
            if model in UNMANAGED:
                continue
            url = reverse(f"admin:{model.replace('.', '_')}_change", urlconf=URLCONF, args=[rows[model].pk])
            expected = access.may(pages.change, permissions=perms, superuser=superuser)
            before = state(rows, model)
            with django_capture_on_commit_callbacks() as callbacks:
                got = not denied(client.post(url, {}))
            if got != expected:
                mismatches.append(f"{role}: POST {url} needs {pages.change}: expected {expected}, got {got}")
            if not expected and (state(rows, model) != before or callbacks):
                mismatches.append(f"{role}: denied POST {url} changed something")
        # Every action: offered exactly when the matrix says, and a denied one changes nothing.
        factory_request = RequestFactory().get("/")
        factory_request.user = user
        for key, (model_admin, _) in registered_actions(admin.site).items():
            model, _, name = key.rpartition(".")
            needs = access.action_needs(key)
            expected = access.may(needs, permissions=perms, superuser=superuser)
            offered = name in model_admin.get_actions(factory_request)
            if offered != expected:
                mismatches.append(f"{role}: action {key} needs {needs}: expected {expected}, got {offered}")
            if model in UNMANAGED:
                continue
            url = reverse(f"admin:{model.replace('.', '_')}_changelist", urlconf=URLCONF)
            before = state(rows, model)
            with django_capture_on_commit_callbacks() as callbacks:
                response = client.post(url, {"action": name, "index": 0,
                                             "_selected_action": [str(rows[model].pk)]})
            if not expected and (state(rows, model) != before or callbacks):
                mismatches.append(f"{role}: denied action {key} changed something")
            if expected and response.status_code not in (200, 302):
                mismatches.append(f"{role}: action {key} answered {response.status_code}")
    assert not mismatches, "\n".join(mismatches)


def test_the_holes_named_in_the_issue_stay_closed(world):
    rows, users, platform_backup = world
    support, operator = admin_client(users[SUPPORT]), admin_client(users[OPERATORS])
    nogroup, root = admin_client(users["staff in no group"]), admin_client(users["superuser"])
    deploy = reverse("admin:deployments_release_deploy", urlconf=URLCONF,
                     args=[rows["deployments.release"].pk])
    rollback = reverse("admin:deployments_deployment_rollback", urlconf=URLCONF,
                       args=[rows["deployments.deployment"].pk])
    before = rows["deployments.deployment"].__class__.objects.count()
    for client in (support, nogroup):
        assert client.post(deploy, {"environment": "matrix-env", "strategy": "blue-green",
                                    "confirm": "1"}).status_code == 403
        assert client.post(rollback, {"confirm_migrations": "1"}).status_code == 403
    assert rows["deployments.deployment"].__class__.objects.count() == before
    assert operator.get(deploy).status_code == 200 and operator.get(rollback).status_code == 200
    # Platform dumps hold every staff password hash: operators may not download them, root may.
    platform = reverse("admin:backups_backup_download", urlconf=URLCONF, args=[platform_backup.pk])
    shop = reverse("admin:backups_backup_download", urlconf=URLCONF, args=[rows["backups.backup"].pk])
    links_before = AuditEvent.objects.filter(action=Action.BACKUP_LINK_ISSUED).count()
    database_backup = type(platform_backup).objects.create(
        kind="database", status="verified", storage="local", location="database.dump"
    )
    whole = reverse("admin:backups_backup_download", urlconf=URLCONF, args=[database_backup.pk])
    assert operator.get(platform).status_code == 403 and operator.get(whole).status_code == 403
    assert AuditEvent.objects.filter(action=Action.BACKUP_LINK_ISSUED).count() == links_before
    assert operator.get(shop).status_code == 302
    assert root.get(platform).status_code == 302
    assert support.get(shop).status_code == 403


def test_a_refused_staff_request_is_audited_with_who_what_and_where(world):
    rows, users, _ = world
    deploy = reverse("admin:deployments_release_deploy", urlconf=URLCONF,
                     args=[rows["deployments.release"].pk])
    response = admin_client(users[SUPPORT]).post(deploy, {"environment": "production"},
                                                  REMOTE_ADDR="203.0.113.5")
    assert response.status_code == 403
    event = AuditEvent.objects.get(action=Action.STAFF_ACCESS_DENIED)
    assert (event.actor_type, event.target) == ("staff", deploy)
    assert users[SUPPORT].username in event.actor
    assert event.details["method"] == "POST" and event.details["ip"] == "203.0.113.5"
    assert "deployments.deploy_release" in event.details["reason"]
