"""The webhook event catalogue, and how an audit event becomes one (type and payload data).

Payloads are built from the audited object as it is when the transaction commits, plus the facts
the audit event recorded. Internal names (schema names, staff logins) are left out: a shop's own
endpoint receives these too (and gets the platform's failure reasons replaced: ``for_shop``).
"""

import uuid
from collections.abc import Callable
from typing import Any

from backups.models import Backup, DisasterRecoveryDrill, Export, Restore, RestoreDrill
from core.audit import Action
from core.models import AuditEvent
from deployments.models import Deployment
from tenants.models import Certificate, Domain, Tenant

# type -> what it means (docs/webhooks.md has the payloads).
EVENT_TYPES: dict[str, str] = {
    "tenant.provisioned": "A shop was created and is active.",
    "tenant.provision_failed": "Creating a shop failed (it can be retried).",
    "tenant.suspended": "A shop was suspended (it answers 503).",
    "tenant.resumed": "A suspended shop is back online.",
    "tenant.plan_changed": "A shop moved to another plan.",
    "tenant.deprovisioned": "A shop was removed.",
    "domain.added": "A custom domain was claimed; it waits for DNS verification.",
    "domain.verified": "A custom domain's ownership and DNS were verified; a certificate is requested.",
    "domain.active": "A custom domain has its certificate and serves the shop.",
    "domain.failed": "A custom domain's verification or certificate failed, or its claim expired.",
    "domain.moved": "An active custom domain's DNS no longer points at the platform.",
    "domain.removed": "A custom domain was removed.",
    "certificate.issued": "A certificate was issued or renewed.",
    "certificate.expiring": "A certificate expires soon and has not been renewed.",
    "backup.succeeded": "A backup was uploaded and verified.",
    "backup.failed": "A backup failed.",
    "backup.restored": "A shop's data was restored (in place or as a new shop; from a backup or to a "
    "moment).",
    "backup.restore_failed": "Restoring a shop failed; the shop was left as it was.",
    "export.ready": "A shop's export archive is ready; ask for its short-lived download link.",
    "export.failed": "A shop's export failed.",
    "drill.passed": "A restore drill restored a backup and it matched its manifest.",
    "drill.failed": "A restore drill found a backup that does not restore or does not match.",
    "database.restored": "The platform's whole database was restored (from a dump, or to a moment).",
    "database.restore_failed": "Restoring the platform's whole database failed; nothing was left behind.",
    "dr_drill.passed": "A disaster-recovery drill restored the platform and a shop from the off-site store.",
    "dr_drill.failed": "A disaster-recovery drill failed (the off-site copies may not be restorable).",
    "deployment.succeeded": "A release was deployed.",
    "deployment.failed": "A deployment failed and nothing was rolled back (the target needs a look).",
    "deployment.rolled_back": "A deployment failed and was rolled back, or a rollback was deployed.",
}

_SIMPLE: dict[str, str] = {
    Action.TENANT_PROVISIONED: "tenant.provisioned",
    Action.TENANT_PROVISION_FAILED: "tenant.provision_failed",
    Action.TENANT_SUSPENDED: "tenant.suspended",
    Action.TENANT_RESUMED: "tenant.resumed",
    Action.TENANT_PLAN_CHANGED: "tenant.plan_changed",
    Action.TENANT_DEPROVISIONED: "tenant.deprovisioned",
    Action.DOMAIN_ADDED: "domain.added",
    Action.DOMAIN_VERIFIED: "domain.verified",
    Action.DOMAIN_ACTIVATED: "domain.active",
    Action.DOMAIN_VERIFICATION_FAILED: "domain.failed",
    Action.DOMAIN_EXPIRED: "domain.failed",
    Action.CERTIFICATE_FAILED: "domain.failed",
    Action.DOMAIN_MOVED: "domain.moved",
    Action.DOMAIN_REMOVED: "domain.removed",
    Action.DOMAIN_REMOVED_AFTER_MOVE: "domain.removed",
    Action.CERTIFICATE_ISSUED: "certificate.issued",
    Action.CERTIFICATE_RENEWED: "certificate.issued",
    Action.BACKUP_VERIFIED: "backup.succeeded",
    Action.BACKUP_FAILED: "backup.failed",
    Action.BACKUP_RESTORED: "backup.restored",
    Action.BACKUP_RESTORE_FAILED: "backup.restore_failed",
    Action.EXPORT_FAILED: "export.failed",
    Action.DRILL_PASSED: "drill.passed",
    Action.DRILL_FAILED: "drill.failed",
    Action.DATABASE_RESTORED: "database.restored",
    Action.DATABASE_PITR_RESTORED: "database.restored",
    Action.DATABASE_RESTORE_FAILED: "database.restore_failed",
    Action.DATABASE_PITR_RESTORE_FAILED: "database.restore_failed",
    Action.DR_DRILL_PASSED: "dr_drill.passed",
    Action.DR_DRILL_FAILED: "dr_drill.failed",
    Action.DEPLOYMENT_SUCCEEDED: "deployment.succeeded",
    Action.ROLLBACK_SUCCEEDED: "deployment.rolled_back",
}
# Audit actions whose event type depends on the event (handled in event_type_for).
_BY_OUTCOME = {Action.DEPLOYMENT_FAILED, Action.TENANT_EXPORTED}
MAPPED_ACTIONS = frozenset(_SIMPLE) | _BY_OUTCOME


def event_type_for(event: AuditEvent) -> str | None:
    """The webhook event type an audit event becomes, or None (most audit events are not sent)."""
    if event.action not in MAPPED_ACTIONS:
        return None
    if event.action == Action.DEPLOYMENT_FAILED:
        rolled_back = (event.details or {}).get("outcome") == Deployment.Status.ROLLED_BACK
        return "deployment.rolled_back" if rolled_back else "deployment.failed"
    if event.action == Action.TENANT_EXPORTED:
        # An Export row (made through the API or the admin) is ready; `export_tenant --output`
        # wrote a file on the operator's machine instead: nothing for anyone to download.
        return "export.ready" if _uuid(event.target) else None
    return _SIMPLE[event.action]


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def tenant_data(tenant: Tenant | None) -> dict[str, Any] | None:
    if tenant is None:
        return None
    return {
        "id": str(tenant.pk),
        "subdomain": tenant.subdomain,
        "name": tenant.name,
        "status": tenant.status,
        "status_reason": tenant.status_reason,
        "plan": tenant.plan.slug,
    }


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _tenant(event: AuditEvent, details: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {"tenant": tenant_data(event.tenant)}
    for key in ("reason", "from", "to", "host"):
        if key in details:
            data[key] = details[key]
    if event.action == Action.TENANT_DEPROVISIONED:
        data["data_deleted"] = bool(details.get("schema_dropped"))
    return data


def domain_data(name: str, domain: Domain | None) -> dict[str, Any]:
    if domain is None:  # removed or expired: only its name is left
        return {"name": name, "status": "removed"}
    cert = Certificate.objects.filter(domain=domain).first()
    return {
        "name": domain.domain,
        "status": domain.status,
        "status_reason": domain.status_reason,
        "is_primary": domain.is_primary,
        "verified_at": _iso(domain.verified_at),
        "certificate": None if cert is None else {
            "status": cert.status,
            "not_after": _iso(cert.not_after),
            "last_error": cert.last_error,
        },
    }


def _domain(event: AuditEvent, details: dict[str, Any]) -> dict[str, Any]:
    domain = Domain.objects.filter(domain=event.target, tenant=event.tenant).first()
    data: dict[str, Any] = {"tenant": tenant_data(event.tenant), "domain": domain_data(event.target, domain)}
    stage = {
        Action.DOMAIN_VERIFICATION_FAILED: "verification",
        Action.CERTIFICATE_FAILED: "certificate",
        Action.DOMAIN_EXPIRED: "expired",
    }.get(Action(event.action))
    if stage:
        data["stage"] = stage
    for key in ("problems", "error", "reason", "rate_limited", "attempt", "serial", "not_after"):
        if key in details:
            data[key] = details[key]
    return data


def _backup(event: AuditEvent, details: dict[str, Any]) -> dict[str, Any]:
    backup = Backup.objects.filter(pk=event.target).first() if event.target else None
    return {
        "tenant": tenant_data(event.tenant),
        "backup": None if backup is None else {
            "id": str(backup.pk),
            "kind": backup.kind,
            "status": backup.status,
            "reason": backup.status_reason[:500],
            "size_bytes": backup.size_bytes,
            "created_at": _iso(backup.created_at),
            "finished_at": _iso(backup.finished_at),
        },
    }


def _deployment(event: AuditEvent, details: dict[str, Any]) -> dict[str, Any]:
    deployment_id = details.get("deployment")
    if not isinstance(deployment_id, int):
        return {"deployment": None}
    found = Deployment.objects.filter(pk=deployment_id).select_related(
        "target__environment", "release", "previous_release"
    ).first()
    if found is None:
        return {"deployment": {"id": details.get("deployment"), "outcome": details.get("outcome")}}
    return {
        "deployment": {
            "id": found.pk,
            "environment": found.target.environment.name,
            "release": found.release.version,
            "previous_release": found.previous_release.version if found.previous_release else None,
            "strategy": found.strategy,
            "status": found.status,
            "is_rollback": found.is_rollback,
            "automatic_rollback": event.action == Action.DEPLOYMENT_FAILED
            and found.status == Deployment.Status.ROLLED_BACK,
            "error": found.error[:1000],
            "started_at": _iso(found.started_at),
            "finished_at": _iso(found.finished_at),
        }
    }


def _restore(event: AuditEvent, details: dict[str, Any]) -> dict[str, Any]:
    """A shop's restore: the Restore row when there is one (a scratch cluster that failed to
    start made none: then what the audit event recorded)."""
    restore_id = _uuid(str(details.get("restore", "")))
    found = (Restore.objects.filter(pk=restore_id).select_related("new_tenant__plan").first()
             if restore_id else None)
    data: dict[str, Any] = {"tenant": tenant_data(event.tenant)}
    if found is None:
        data["restore"] = {"id": None, "mode": details.get("mode"), "status": "failed",
                           "source": event.target, "reason": str(details.get("reason", ""))[:500]}
        return data
    data["restore"] = {
        "id": str(found.pk),
        "mode": found.mode,
        "status": found.status,
        "backup_id": str(found.backup_id) if found.backup_id else None,
        "to_time": _iso(found.to_time),
        "new_tenant": tenant_data(found.new_tenant),
        "started_at": _iso(found.started_at),
        "finished_at": _iso(found.finished_at),
        "duration_seconds": found.duration_seconds,
        "reason": found.status_reason[:500],
    }
    return data


def _export(event: AuditEvent, details: dict[str, Any]) -> dict[str, Any]:
    export_id = _uuid(event.target)
    found = Export.objects.filter(pk=export_id).first() if export_id else None
    return {
        "tenant": tenant_data(event.tenant),
        # No link in the body: links are short-lived and each one is audited; GET the export's
        # status URL for one.
        "export": None if found is None else {
            "id": str(found.pk),
            "status": found.status,
            "reason": found.status_reason[:500],
            "size_bytes": found.size_bytes,
            "sha256": found.sha256,
            "created_at": _iso(found.created_at),
            "finished_at": _iso(found.finished_at),
            "expires_at": _iso(found.expires_at),
            "status_url": f"/api/v1/exports/{found.pk}",
        },
    }


def _drill(event: AuditEvent, details: dict[str, Any]) -> dict[str, Any]:
    drill_id = details.get("drill")
    found = RestoreDrill.objects.filter(pk=drill_id).first() if isinstance(drill_id, int) else None
    return {
        "tenant": tenant_data(event.tenant),  # null for platform and whole-database backups
        "drill": {
            "id": drill_id,
            "backup_id": event.target or None,
            "passed": event.action == Action.DRILL_PASSED,
            "rto_seconds": details.get("rto_seconds"),
            "reason": str(details.get("reason", ""))[:500],
            "checks": found.checks if found is not None else [],
        },
    }


def _dr_drill(event: AuditEvent, details: dict[str, Any]) -> dict[str, Any]:
    found = (DisasterRecoveryDrill.objects.filter(pk=int(event.target)).first()
             if event.target.isdigit() else None)
    return {
        "drill": {
            "id": found.pk if found else event.target,
            "passed": event.action == Action.DR_DRILL_PASSED,
            "shop": details.get("shop") or None,  # the shop restored from the off-site store
            "rto_seconds": details.get("rto_seconds"),
            "reason": str(details.get("reason", ""))[:500],
            "checks": found.checks if found is not None else [],
            "started_at": _iso(found.started_at) if found else None,
            "finished_at": _iso(found.finished_at) if found else None,
        },
    }


def _database(event: AuditEvent, details: dict[str, Any]) -> dict[str, Any]:
    pitr = event.action in (Action.DATABASE_PITR_RESTORED, Action.DATABASE_PITR_RESTORE_FAILED)
    data: dict[str, Any] = {"kind": "pitr" if pitr else "dump", "source": event.target}
    for key in ("target", "recovered_to", "schemas", "tables", "rows", "seconds", "reason"):
        if key in details:
            data[key] = details[key]
    return {"database": data}


_BUILDERS: dict[str, Callable[[AuditEvent, dict[str, Any]], dict[str, Any]]] = {
    "tenant": _tenant,
    "domain": _domain,
    "certificate": _domain,
    "backup": _backup,
    "backup.restored": _restore,
    "backup.restore_failed": _restore,
    "export": _export,
    "drill": _drill,
    "dr_drill": _dr_drill,
    "database": _database,
    "deployment": _deployment,
}


# The platform's own operations on a shop: their failure reasons come from pg_dump, the object
# store or a scratch cluster and may name internal hosts, buckets or paths. A shop's endpoints get
# the event without them; the platform's endpoints (and the audit log) keep them.
_INTERNAL_REASONS = ("backup.", "export.", "drill.")
SHOP_REASON = "Details are in the platform's audit log; contact the platform's support."


def for_shop(event_type: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """The data a shop's own endpoint may receive, when it differs from the platform's (else None)."""
    if not event_type.startswith(_INTERNAL_REASONS):
        return None

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: SHOP_REASON if k in ("reason", "error") and v else scrub(v) for k, v in value.items()}
        return value

    return scrub(data)


def data_for(event: AuditEvent, event_type: str) -> dict[str, Any]:
    """The `data` of the webhook body for an audit event mapped to `event_type`."""
    build = _BUILDERS.get(event_type) or _BUILDERS[event_type.split(".", 1)[0]]
    return build(event, dict(event.details or {}))


def certificate_expiring_data(cert: Certificate, days_left: int) -> dict[str, Any]:
    domain = cert.domain
    return {
        "tenant": tenant_data(domain.tenant),
        "domain": domain_data(domain.domain, domain),
        "certificate": {
            "serial": cert.serial,
            "not_after": _iso(cert.not_after),
            "days_left": days_left,
            "last_error": cert.last_error,
        },
    }
