"""RQ jobs for custom domains: thin and idempotent, they load by id and call one service."""

from django.db import connection

from tenants import domains
from tenants.audit import Actor
from tenants.jobs import _job_actor
from tenants.models import Domain


def verify_domain_job(domain_id: int, actor_type: str, actor_name: str) -> str:
    connection.set_schema_to_public()
    domain = Domain.objects.select_related("tenant").filter(pk=domain_id).first()
    if domain is None:
        return "gone"
    result = domains.domain_verify(domain=domain, actor=_job_actor(actor_type, actor_name))
    return result.domain.status if result.domain else "removed"


def verify_due_domains_job() -> int:
    """Cron: re-check every domain whose next check is due (pending backoff, active re-checks)."""
    connection.set_schema_to_public()
    due = domains.domains_due()
    actor = _job_actor(*_system())
    return len(domains.domains_verify(domains=due, actor=actor))


def _system() -> tuple[str, str]:
    actor = Actor.system("domain scheduler")
    return actor.type, actor.name
