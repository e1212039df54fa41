"""The webhook event catalogue, and how an audit event becomes one (type and payload data).

Payloads are built from the audited object as it is when the transaction commits, plus the facts
the audit event recorded. Internal names (schema names, staff logins) are left out: a shop's own
endpoint receives these too.
"""

from collections.abc import Callable
from typing import Any

from backups.models import Backup
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
    Action.DEPLOYMENT_SUCCEEDED: "deployment.succeeded",
    Action.ROLLBACK_SUCCEEDED: "deployment.rolled_back",
}
# Audit actions whose event type depends on the event (handled in event_type_for).
_BY_OUTCOME = {Action.DEPLOYMENT_FAILED}
MAPPED_ACTIONS = frozenset(_SIMPLE) | _BY_OUTCOME


def event_type_for(event: AuditEvent) -> str | None:
    """The webhook event type an audit event becomes, or None (most audit events are not sent)."""
    if event.action not in MAPPED_ACTIONS:
        return None
    if event.action == Action.DEPLOYMENT_FAILED:
        rolled_back = (event.details or {}).get("outcome") == Deployment.Status.ROLLED_BACK
        return "deployment.rolled_back" if rolled_back else "deployment.failed"
    return _SIMPLE[event.action]


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


_BUILDERS: dict[str, Callable[[AuditEvent, dict[str, Any]], dict[str, Any]]] = {
    "tenant": _tenant,
    "domain": _domain,
    "certificate": _domain,
    "backup": _backup,
    "deployment": _deployment,
}


def data_for(event: AuditEvent, event_type: str) -> dict[str, Any]:
    """The `data` of the webhook body for an audit event mapped to `event_type`."""
    return _BUILDERS[event_type.split(".", 1)[0]](event, dict(event.details or {}))


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
