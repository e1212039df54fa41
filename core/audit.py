"""The audit trail: one call, used by every state-changing service, with one registry of names.

Every action name is `<entity>.<what happened>` (past tense), and every name is declared once in
`Action`: a misspelt or undeclared name fails at the call, not in an auditor's query months later.
"""

import getpass
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from django.dispatch import Signal

from core.models import AuditEvent

if TYPE_CHECKING:
    from tenants.models import Tenant


class Action(StrEnum):
    # Tenancy (tenants)
    TENANT_REQUESTED = "tenant.requested"
    TENANT_RETRY_REQUESTED = "tenant.retry_requested"
    TENANT_PROVISIONED = "tenant.provisioned"
    TENANT_PROVISION_FAILED = "tenant.provision_failed"
    TENANT_OWNER_LINK_ISSUED = "tenant.owner_link_issued"
    TENANT_SUSPENDED = "tenant.suspended"
    TENANT_RESUMED = "tenant.resumed"
    TENANT_PLAN_CHANGED = "tenant.plan_changed"
    TENANT_RENAMED = "tenant.renamed"
    TENANT_DEPROVISIONED = "tenant.deprovisioned"
    PLAN_CREATED = "plan.created"
    PLAN_CHANGED = "plan.changed"
    PLAN_DELETED = "plan.deleted"
    SCHEMAS_MIGRATED = "schemas.migrated"
    SCHEMAS_MIGRATION_FAILED = "schemas.migration_failed"
    # Custom domains and TLS (tenants.domains)
    DOMAIN_ADDED = "domain.added"
    DOMAIN_VERIFIED = "domain.verified"
    DOMAIN_VERIFICATION_FAILED = "domain.verification_failed"
    DOMAIN_ACTIVATED = "domain.activated"
    DOMAIN_MADE_PRIMARY = "domain.made_primary"
    DOMAIN_DISABLED = "domain.disabled"
    DOMAIN_ENABLED = "domain.enabled"
    DOMAIN_EXPIRED = "domain.expired"
    DOMAIN_MOVED = "domain.moved"
    DOMAIN_RETURNED = "domain.returned"
    DOMAIN_REMOVED = "domain.removed"
    DOMAIN_REMOVED_AFTER_MOVE = "domain.removed_after_move"
    CERTIFICATE_ISSUED = "certificate.issued"
    CERTIFICATE_RENEWED = "certificate.renewed"
    CERTIFICATE_FAILED = "certificate.failed"
    EDGE_RENDERED = "edge.rendered"
    EDGE_RENDER_FAILED = "edge.render_failed"
    EDGE_RELOAD_FAILED = "edge.reload_failed"
    PLATFORM_CERTIFICATE_ISSUED = "platform_certificate.issued"
    PLATFORM_CERTIFICATE_RENEWED = "platform_certificate.renewed"
    PLATFORM_CERTIFICATE_FAILED = "platform_certificate.failed"
    # Shop data (storefront)
    PRODUCT_CREATED = "product.created"
    # Backups, restores, drills, exports (backups)
    BACKUP_QUEUED = "backup.queued"
    BACKUP_UPLOADED = "backup.uploaded"
    BACKUP_VERIFIED = "backup.verified"
    BACKUP_FAILED = "backup.failed"
    BACKUP_ERASURE_SCHEDULED = "backup.erasure_scheduled"
    BACKUP_ERASED = "backup.erased"
    BACKUP_PRUNED = "backup.pruned"
    BACKUP_LINK_ISSUED = "backup.link_issued"
    BACKUP_RESTORE_STARTED = "backup.restore_started"
    BACKUP_RESTORED = "backup.restored"
    BACKUP_RESTORE_FAILED = "backup.restore_failed"
    DATABASE_RESTORED = "database.restored"
    DATABASE_RESTORE_FAILED = "database.restore_failed"
    # The continuous archive (pgBackRest) and restores to a moment.
    PITR_CONFIGURED = "pitr.configured"
    PITR_BACKED_UP = "pitr.backed_up"
    PITR_BACKUP_FAILED = "pitr.backup_failed"
    DATABASE_PITR_RESTORED = "database.pitr_restored"
    DATABASE_PITR_RESTORE_FAILED = "database.pitr_restore_failed"
    DRILL_PASSED = "drill.passed"
    DRILL_FAILED = "drill.failed"
    EXPORT_QUEUED = "export.queued"
    TENANT_EXPORTED = "tenant.exported"
    EXPORT_FAILED = "export.failed"
    EXPORT_DELETED = "export.deleted"
    EXPORT_LINK_ISSUED = "export.link_issued"
    # Off-site copies and disaster-recovery drills (backups/services/offsite.py, dr.py)
    OFFSITE_COPY_QUEUED = "offsite.copy_queued"
    OFFSITE_COPIED = "offsite.copied"
    OFFSITE_COPY_FAILED = "offsite.copy_failed"
    OFFSITE_VERIFIED = "offsite.verified"
    OFFSITE_CORRUPT = "offsite.corrupt"
    OFFSITE_PRUNED = "offsite.pruned"
    OFFSITE_ERASED = "offsite.erased"
    DR_DRILL_PASSED = "dr_drill.passed"
    DR_DRILL_FAILED = "dr_drill.failed"
    # Releases and deployments (deployments)
    RELEASE_CREATED = "release.created"
    DEPLOYMENT_PLANNED = "deployment.planned"
    DEPLOYMENT_SUCCEEDED = "deployment.succeeded"
    DEPLOYMENT_FAILED = "deployment.failed"
    ROLLBACK_PLANNED = "rollback.planned"
    ROLLBACK_SUCCEEDED = "rollback.succeeded"
    AWS_DOMAINS_SYNCED = "aws_domains.synced"
    AWS_DOMAINS_SYNC_FAILED = "aws_domains.sync_failed"
    AWS_DOMAINS_QUOTA_REACHED = "aws_domains.quota_reached"
    TARGET_EDGE_PUSHED = "target_edge.pushed"
    TARGET_EDGE_PUSH_FAILED = "target_edge.push_failed"
    ENVIRONMENT_SECRET_CREATED = "environment_secret.created"
    ENVIRONMENT_SECRET_REPLACED = "environment_secret.replaced"
    ENVIRONMENT_SECRET_DELETED = "environment_secret.deleted"
    # Monitoring (monitoring)
    CHANNEL_CREATED = "channel.created"
    CHANNEL_CHANGED = "channel.changed"
    CHANNEL_DELETED = "channel.deleted"
    CHANNEL_TEST_SENT = "channel.test_sent"
    ALERT_RULE_CHANGED = "alert_rule.changed"
    INCIDENT_ACKNOWLEDGED = "incident.acknowledged"
    INCIDENT_RESOLVED = "incident.resolved"
    # Logins (core.login, core.two_factor): staff on the admin host, shop owners on shop hosts
    STAFF_LOGGED_IN = "staff.logged_in"
    STAFF_LOGGED_OUT = "staff.logged_out"
    STAFF_LOGIN_FAILED = "staff.login_failed"
    STAFF_LOCKED_OUT = "staff.locked_out"
    STAFF_2FA_ENROLLED = "staff.2fa_enrolled"
    STAFF_2FA_REMOVED = "staff.2fa_removed"
    STAFF_ACCESS_DENIED = "staff.access_denied"
    OWNER_LOGGED_IN = "owner.logged_in"
    OWNER_LOGGED_OUT = "owner.logged_out"
    OWNER_LOGIN_FAILED = "owner.login_failed"
    OWNER_LOCKED_OUT = "owner.locked_out"
    LOGIN_LOCKOUT_CLEARED = "login_lockout.cleared"
    # Webhooks out (webhooks)
    WEBHOOK_ENDPOINT_CREATED = "webhook_endpoint.created"
    WEBHOOK_ENDPOINT_CHANGED = "webhook_endpoint.changed"
    WEBHOOK_ENDPOINT_DELETED = "webhook_endpoint.deleted"
    WEBHOOK_ENDPOINT_SECRET_ROTATED = "webhook_endpoint.secret_rotated"
    WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint.disabled"
    WEBHOOK_ENDPOINT_ENABLED = "webhook_endpoint.enabled"
    WEBHOOK_DELIVERY_RESENT = "webhook_delivery.resent"

    # The API (api/): keys made, revoked, calls refused for a missing scope, and reads (GET/HEAD
    # calls made with a key: method, path, status; changes are audited by the services they call)
    API_KEY_CREATED = "api_key.created"
    API_KEY_REVOKED = "api_key.revoked"
    API_ACCESS_DENIED = "api.access_denied"
    API_READ = "api.read"
    API_READS_PRUNED = "api.reads_pruned"


logger = logging.getLogger(__name__)

# Sent after each audit event is written (sender=AuditEvent, event=the row), inside the caller's
# transaction: apps above core hook in here (webhooks) without core or tenants importing them.
# Receivers must be cheap and defer real work to transaction.on_commit.
audit_recorded = Signal()


@dataclass(frozen=True)
class Actor:
    """Who asked for a change. Jobs carry the actor that enqueued them."""

    type: str
    name: str

    @classmethod
    def staff(cls, user) -> "Actor":
        return cls(AuditEvent.ActorType.STAFF, user.get_username())

    @classmethod
    def tenant_user(cls, who: str) -> "Actor":
        return cls(AuditEvent.ActorType.TENANT_USER, who)

    @classmethod
    def api_key(cls, key) -> "Actor":
        """A call made with an API key (api.models.APIKey): its visible prefix and name."""
        return cls(AuditEvent.ActorType.API_KEY, f"key {key.prefix} ({key.name})"[:200])

    @classmethod
    def command(cls, command_name: str) -> "Actor":
        try:
            who = getpass.getuser()
        except (KeyError, OSError):
            who = "unknown"
        return cls(AuditEvent.ActorType.COMMAND, f"{command_name} (run by {who})")

    @classmethod
    def system(cls, what: str = "scheduler") -> "Actor":
        return cls(AuditEvent.ActorType.SYSTEM, what)

    @classmethod
    def for_job(cls, actor_type: str, actor_name: str) -> "Actor":
        """Inside an RQ job: the actor that enqueued it (passed as two strings), via this job."""
        from rq import get_current_job

        job = get_current_job()
        return cls(actor_type, actor_name).via_job(job.id if job else "inline")

    def via_job(self, job_id: str) -> "Actor":
        return Actor(AuditEvent.ActorType.JOB, f"job {job_id} for {self.type}:{self.name}"[:200])

    @property
    def job_args(self) -> tuple[str, str]:
        """The two strings a job takes to rebuild this actor with `Actor.for_job`."""
        return self.type, self.name


def audit_record(
    *,
    actor: Actor,
    action: Action,
    tenant: "Tenant | None" = None,
    target: object = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    # Undeclared names fail here (ValueError), so the registry stays the whole vocabulary.
    action = Action(action)
    # The audit table lives only in the public schema, which is on every search_path.
    event = AuditEvent.objects.create(
        actor_type=actor.type,
        actor=actor.name[:200],
        action=action.value,
        tenant=tenant,
        tenant_label=tenant.subdomain if tenant else "",
        target=str(target)[:255],
        details=details or {},
    )
    # A broken receiver must not undo the change it hears about: logged, not raised.
    for receiver, result in audit_recorded.send_robust(sender=AuditEvent, event=event):
        if isinstance(result, Exception):
            logger.error("audit_recorded receiver %r failed on %s: %r", receiver, action.value, result)
    return event
