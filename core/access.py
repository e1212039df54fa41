"""The access matrix: which permission every page and every action of the control plane needs.

One declaration, three readers: tests/platform/test_role_matrix.py walks the control plane's
URLconf and every registered admin action and checks each role against it (a page or action that
is not declared here fails that test); `manage.py security_doc` writes the "Roles" section of
docs/security.md from it; people read it before they add a view. Which role holds which permission
is in core.roles. Plain data: core imports no app, so names are strings.
"""

from dataclasses import dataclass

# Not a permission: who may use the page beyond the permissions.
ANY_STAFF = "any staff login"  # the admin site's own check (is_staff, active)
PUBLIC = "no staff login"  # answers without a staff session (it has its own check, or needs none)
NOBODY = "nobody"  # switched off for everyone, superusers included
SPECIAL = (ANY_STAFF, PUBLIC, NOBODY)


@dataclass(frozen=True)
class Entry:
    needs: str  # a dotted permission, or one of SPECIAL
    what: str  # one line for docs/security.md


@dataclass(frozen=True)
class ModelPages:
    """A ModelAdmin's standard pages: list, detail and history need `view` (or the change
    permission), the add page `add`, saving the detail page `change`, the delete page `delete`.
    Django's "delete selected" action needs `delete` too."""

    view: str
    add: str = NOBODY
    change: str = NOBODY
    delete: str = NOBODY


RQ = "django_rq.admin"

MODEL_PAGES: dict[str, ModelPages] = {
    "tenants.plan": ModelPages(
        "tenants.view_plan", "tenants.add_plan", "tenants.change_plan", "tenants.delete_plan"
    ),
    # Provisioning is the add page; a tenant row is never deleted (deprovisioning keeps it).
    "tenants.tenant": ModelPages(
        "tenants.view_tenant", "tenants.provision_tenant", "tenants.change_tenant", NOBODY
    ),
    "tenants.domain": ModelPages(
        "tenants.view_domain", NOBODY, "tenants.change_domain", "tenants.delete_domain"
    ),
    "tenants.schemapoolentry": ModelPages("tenants.view_schemapoolentry"),
    "tenants.platformcertificate": ModelPages("tenants.view_platformcertificate"),
    "core.auditevent": ModelPages("core.view_auditevent"),
    "auth.user": ModelPages("auth.view_user", "auth.add_user", "auth.change_user", "auth.delete_user"),
    "auth.group": ModelPages("auth.view_group", "auth.add_group", "auth.change_group", "auth.delete_group"),
    "django_rq.dashboard": ModelPages(RQ, NOBODY, RQ, NOBODY),
    "backups.backup": ModelPages("backups.view_backup", NOBODY, NOBODY, "backups.delete_backup"),
    "backups.restore": ModelPages("backups.view_restore", NOBODY, NOBODY, "backups.delete_restore"),
    "backups.restoredrill": ModelPages(
        "backups.view_restoredrill", NOBODY, "backups.change_restoredrill", "backups.delete_restoredrill"
    ),
    "backups.export": ModelPages("backups.view_export"),
    # Off-site copies and DR drill reports: rows only the services write.
    "backups.offsitecopy": ModelPages("backups.view_offsitecopy"),
    "backups.disasterrecoverydrill": ModelPages("backups.view_disasterrecoverydrill"),
    "backups.pitrbackup": ModelPages("backups.view_pitrbackup"),
    "deployments.environment": ModelPages(
        "deployments.view_environment", "deployments.add_environment",
        "deployments.change_environment", "deployments.delete_environment",
    ),
    "deployments.target": ModelPages(
        "deployments.view_target", "deployments.add_target", "deployments.change_target",
        "deployments.delete_target",
    ),
    "deployments.release": ModelPages(
        "deployments.view_release", "deployments.add_release", "deployments.change_release",
        "deployments.delete_release",
    ),
    "deployments.deployment": ModelPages("deployments.view_deployment"),
    "deployments.environmentsecret": ModelPages(
        "deployments.view_environmentsecret", "deployments.add_environmentsecret",
        "deployments.change_environmentsecret", "deployments.delete_environmentsecret",
    ),
    "monitoring.statusdashboard": ModelPages("monitoring.view_statusdashboard"),
    "monitoring.alertrule": ModelPages("monitoring.view_alertrule", NOBODY, "monitoring.change_alertrule"),
    "monitoring.channel": ModelPages(
        "monitoring.view_channel", "monitoring.add_channel", "monitoring.change_channel",
        "monitoring.delete_channel",
    ),
    "monitoring.incident": ModelPages("monitoring.view_incident", NOBODY, "monitoring.change_incident"),
    "monitoring.delivery": ModelPages(
        "monitoring.view_delivery", NOBODY, NOBODY, "monitoring.delete_delivery"
    ),
    "monitoring.proberesult": ModelPages(
        "monitoring.view_proberesult", NOBODY, NOBODY, "monitoring.delete_proberesult"
    ),
    # Webhooks out: endpoints (secret write-only) and deliveries (rows the worker writes).
    "webhooks.endpoint": ModelPages(
        "webhooks.view_endpoint", "webhooks.add_endpoint", "webhooks.change_endpoint",
        "webhooks.delete_endpoint",
    ),
    "webhooks.delivery": ModelPages("webhooks.view_delivery"),
    # Failed-login records (django-axes): deleting one lifts a lockout, and is audited.
    "axes.accessattempt": ModelPages(
        "axes.view_accessattempt", NOBODY, NOBODY, "axes.delete_accessattempt"
    ),
    # API keys (api/): made once (shown once), revoked, never edited or deleted.
    "api.apikey": ModelPages("api.view_apikey", "api.add_apikey"),
    # Staff TOTP devices: staff accounts stay with superusers, so resetting one does too.
    "otp_totp.totpdevice": ModelPages(
        "otp_totp.view_totpdevice", NOBODY, NOBODY, "otp_totp.delete_totpdevice"
    ),
}

_RQ_PAGES = {
    "home": "the job dashboard",
    "home_json": "queue statistics (JSON)",
    "metrics": "queue metrics",
    "jobs": "a queue's jobs",
    "queue_details": "a queue's details",
    "finished_jobs": "finished jobs",
    "failed_jobs": "failed jobs",
    "delete_failed_jobs": "delete all failed jobs",
    "scheduled_jobs": "scheduled jobs",
    "started_jobs": "started jobs",
    "deferred_jobs": "deferred jobs",
    "clear": "empty a queue",
    "requeue_all": "requeue every failed job",
    "job_detail": "a job",
    "result_detail": "a job's result",
    "delete_job": "delete a job",
    "requeue_job": "requeue a job",
    "enqueue_job": "enqueue a deferred job",
    "stop_job": "stop a running job",
    "confirm_action": "confirm a bulk job action",
    "actions": "run a bulk job action",
    "workers": "workers",
    "worker_details": "a worker",
    "scheduler_jobs": "a scheduler's jobs",
    "cron_scheduler_detail": "a cron scheduler",
    "cron_job_detail": "a cron job",
}

# Every other URL of platform_site.urls_public, by its name (namespace:name). Unnamed ones are in
# UNNAMED_VIEWS, by their route.
VIEWS: dict[str, Entry] = {
    "admin:index": Entry(ANY_STAFF, "Staff console home (shows only what the user may see)"),
    "admin:app_list": Entry(ANY_STAFF, "An app's page in the console (shows only what the user may see)"),
    "admin:login": Entry(PUBLIC, "Staff login"),
    "admin:logout": Entry(ANY_STAFF, "Log out"),
    "admin:password_change": Entry(ANY_STAFF, "Change one's own password"),
    "admin:password_change_done": Entry(ANY_STAFF, "Password changed"),
    # No admin field uses autocomplete, so it refuses every request; were one added, it would answer
    # for models the user may view, and this entry must say so.
    "admin:autocomplete": Entry(NOBODY, "Autocomplete (no field uses it)"),
    "admin:jsi18n": Entry(ANY_STAFF, "Admin JavaScript translations"),
    "admin:view_on_site": Entry(ANY_STAFF, "'View on site' redirect"),
    "admin:auth_user_password_change": Entry("auth.change_user", "Set a staff user's password"),
    "admin:backups_backup_restore": Entry("backups.restore_backup", "Restore a shop from a backup"),
    "admin:backups_backup_download": Entry(
        "backups.download_backup",
        "Download a shop's backup (platform and whole-database backups also need "
        "backups.download_platform_backup)",
    ),
    "admin:backups_backup_file": Entry(
        ANY_STAFF, "Fetch a backup through a signed, short-lived link issued by the download page"
    ),
    "admin:backups_export_download": Entry("backups.download_backup", "Download a shop's data export"),
    "admin:backups_pitrbackup_restore_tenant": Entry(
        "backups.restore_to_time",
        "Restore a shop to a moment from the continuous archive (in place or as new)",
    ),
    "admin:backups_export_file": Entry(
        ANY_STAFF, "Fetch an export through a signed, short-lived link issued by the download page"
    ),
    "admin:backups_disasterrecoverydrill_run": Entry(
        "backups.run_dr_drill", "Run a disaster-recovery drill (restores from the off-site store)"
    ),
    "admin:deployments_release_deploy": Entry(
        "deployments.deploy_release", "Deploy a release (plan preview, then deploy)"
    ),
    "admin:deployments_deployment_rollback": Entry(
        "deployments.rollback_release", "Roll an environment back to an earlier release"
    ),
    **{
        f"admin:django_rq_{name}": Entry(RQ, f"Job dashboard in the console: {what}")
        for name, what in _RQ_PAGES.items()
    },
    **{f"django_rq:{name}": Entry(RQ, f"Job dashboard: {what}") for name, what in _RQ_PAGES.items()},
    "staff_2fa_setup": Entry(ANY_STAFF, "Set up one's own two-factor device (TOTP)"),
    "tls_ask": Entry(PUBLIC, "On-demand TLS check for the edge (answers only yes or no for a host name)"),
    # The API (api/, docs/api.md): its schema is public, its interactive docs need a staff login.
    "api:openapi-json": Entry(PUBLIC, "The API's OpenAPI document (/api/schema/)"),
    "api:openapi-view": Entry(ANY_STAFF, "The API's interactive docs (/api/docs/)"),
    "api_not_found": Entry(PUBLIC, "Any other /api/ path: a 404 problem"),
}

# URL namespaces whose every page checks its own credential instead of a staff login: the API's
# endpoints take an API key and each needs one scope (api/endpoints/, tests/api/ try each).
API_NAMESPACES: dict[str, Entry] = {
    "api": Entry(PUBLIC, "API endpoints (an API key with the endpoint's scope; docs/api.md)"),
}

# Views on shops' own hosts (platform_site.urls_tenants), for their owners; not staff pages.
SHOP_VIEWS: dict[str, str] = {
    "selfservice_domains": "the shop's owners (tenants.domains.views.owner_required)",
    "selfservice_api_keys": "the shop's owners: make and list shop API keys (api/selfservice.py)",
    "selfservice_api_key_revoke": "the shop's owners: revoke one of the shop's keys",
}

UNNAMED_VIEWS: dict[str, Entry] = {
    "": Entry(PUBLIC, "Redirect to the staff console"),
    "admin/(?P<url>.*)$": Entry(ANY_STAFF, "The console's 'not found' page"),
    # Every ModelAdmin's old-style detail URL: a redirect to its change page (which checks).
    "admin/<app>/<model>/<path:object_id>/": Entry(ANY_STAFF, "Redirect to a detail page"),
}

# Every admin action, as "<app_label>.<model_name>.<action name>". Django's delete_selected is
# covered by ModelPages.delete and listed here only where it is switched on.
ACTIONS: dict[str, Entry] = {
    "tenants.tenant.suspend_tenants": Entry("tenants.suspend_tenant", "Suspend shops"),
    "tenants.tenant.resume_tenants": Entry("tenants.resume_tenant", "Resume shops"),
    "tenants.tenant.change_plan": Entry("tenants.change_tenant_plan", "Move shops to another plan"),
    "tenants.tenant.issue_owner_link": Entry("tenants.issue_owner_link", "Issue an owner set-password link"),
    "tenants.tenant.deprovision_tenants": Entry(
        "tenants.deprovision_tenant", "Deprovision shops (drops their data)"
    ),
    "tenants.tenant.backup_now": Entry("backups.add_backup", "Back up shops now"),
    "tenants.tenant.export_data": Entry("backups.download_backup", "Export shops' data"),
    "tenants.domain.reverify": Entry("tenants.verify_domain", "Re-verify custom domains (DNS, HTTP)"),
    "tenants.domain.issue_certificate": Entry(
        "tenants.issue_certificate", "Issue or renew certificates (the CA)"
    ),
    "tenants.platformcertificate.issue_now": Entry(
        "tenants.issue_platform_certificate", "Issue or renew the platform wildcard certificate (DNS-01)"
    ),
    "tenants.domain.disable": Entry("tenants.disable_domain", "Disable custom domains (stop routing)"),
    "tenants.domain.enable": Entry("tenants.enable_domain", "Enable disabled custom domains"),
    "backups.backup.verify_selected": Entry("backups.verify_backup", "Verify backups (read back, sha256)"),
    "backups.backup.drill_selected": Entry("backups.run_restore_drill", "Run restore drills"),
    "backups.offsitecopy.verify_offsite": Entry(
        "backups.copy_offsite", "Verify off-site copies (read back from the second store)"
    ),
    "backups.offsitecopy.copy_again": Entry(
        "backups.copy_offsite", "Copy failed or corrupt off-site copies again"
    ),
    "monitoring.channel.send_test": Entry(
        "monitoring.send_test_alert", "Send a test alert through a channel"
    ),
    "webhooks.endpoint.rotate_secret": Entry(
        "webhooks.change_endpoint", "Rotate webhook endpoints' signing secrets (shown once)"
    ),
    "webhooks.endpoint.disable": Entry("webhooks.change_endpoint", "Disable webhook endpoints"),
    "webhooks.endpoint.enable": Entry("webhooks.change_endpoint", "Enable webhook endpoints"),
    "webhooks.delivery.resend": Entry("webhooks.resend_delivery", "Re-send webhook deliveries"),
    "monitoring.incident.acknowledge": Entry("monitoring.acknowledge_incident", "Acknowledge incidents"),
    "api.apikey.revoke_keys": Entry("api.revoke_apikey", "Revoke API keys"),
    "monitoring.incident.resolve": Entry(
        "monitoring.resolve_incident", "Resolve incidents (notifies the channels)"
    ),
}


def delete_action_key(model: str) -> str:
    return f"{model}.delete_selected"


def action_needs(key: str) -> str | None:
    """The permission an action needs (delete_selected: its model's delete page), or None."""
    model, _, name = key.rpartition(".")
    if name == "delete_selected" and model in MODEL_PAGES:
        return MODEL_PAGES[model].delete
    entry = ACTIONS.get(key)
    return entry.needs if entry else None


def may(needs: str, *, permissions: set[str], superuser: bool) -> bool:
    """Whether a staff login holding `permissions` (or a superuser) gets past `needs`."""
    if needs == NOBODY:
        return False
    if needs in (ANY_STAFF, PUBLIC):
        return True
    return superuser or needs in permissions
