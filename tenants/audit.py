"""The audit trail: one call, used by every state-changing service."""

import getpass
from dataclasses import dataclass
from typing import Any

from tenants.models import AuditEvent, Tenant


@dataclass(frozen=True)
class Actor:
    """Who asked for a change. Jobs carry the actor that enqueued them."""

    type: str
    name: str

    @classmethod
    def staff(cls, user) -> "Actor":
        return cls(AuditEvent.ActorType.STAFF, user.get_username())

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

    def via_job(self, job_id: str) -> "Actor":
        return Actor(AuditEvent.ActorType.JOB, f"job {job_id} for {self.type}:{self.name}"[:200])


def audit_record(
    *,
    actor: Actor,
    action: str,
    tenant: Tenant | None = None,
    target: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    # The audit table lives only in the public schema, which is on every search_path.
    return AuditEvent.objects.create(
        actor_type=actor.type,
        actor=actor.name[:200],
        action=action,
        tenant=tenant,
        tenant_label=tenant.subdomain if tenant else "",
        target=str(target)[:255],
        details=details or {},
    )
