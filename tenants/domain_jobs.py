"""RQ jobs for custom domains: thin and idempotent, they load by id and call one service."""

import django_rq
from django.db import connection

from tenants import certificates, domains, edge
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
    # One run at a time: a long run must not overlap the next minute's and check domains twice.
    lock = django_rq.get_connection("default").lock("platform:domains-verify-due", timeout=1800)
    if not lock.acquire(blocking=False):
        return 0
    try:
        connection.set_schema_to_public()
        due = domains.domains_due()
        return len(domains.domains_verify(domains=due, actor=_job_actor(*_system())))
    finally:
        lock.release()


def _system() -> tuple[str, str]:
    actor = Actor.system("domain scheduler")
    return actor.type, actor.name


def issue_certificate_job(domain_id: int, actor_type: str, actor_name: str) -> str:
    connection.set_schema_to_public()
    domain = Domain.objects.select_related("tenant").filter(pk=domain_id).first()
    if domain is None or domain.status not in certificates.ISSUABLE:
        return "skipped"
    try:
        cert = certificates.certificate_issue(domain=domain, actor=_job_actor(actor_type, actor_name))
    except certificates.IssuanceBusy:
        # Another worker is on it: this duplicate has nothing to do.
        return "busy"
    return cert.status


def certificates_due_job() -> int:
    """Cron: queue renewals (ACME_RENEW_DAYS before expiry) and retries of failed requests."""
    connection.set_schema_to_public()
    actor_type, actor_name = _system()
    queue = django_rq.get_queue("default")
    due = certificates.certificates_due()
    for domain in due:
        queue.enqueue(issue_certificate_job, domain.pk, actor_type, actor_name)
    return len(due)


def render_edge_job() -> str:
    # Renders coalesce: one at a time, and the one running picks up every change made before it.
    lock = django_rq.get_connection("default").lock("platform:edge-render", timeout=600)
    if not lock.acquire(blocking=True, blocking_timeout=600):
        return "busy"
    try:
        result = edge.edge_render(actor=_job_actor(*_system()))
    finally:
        lock.release()
    return f"{result.domains} domains, changed={result.changed}"
