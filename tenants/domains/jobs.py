"""RQ jobs for custom domains: thin and idempotent, they load by id and call one service.

Each job is bound to its queue here; callers use ``job.delay(...)``.
"""

import django_rq
from django.core.cache import cache
from django.db import transaction
from rq import Queue

from core.audit import Actor
from core.db import connection
from core.jobs import job
from tenants.domains import certificates, edge, platform_certificate
from tenants.domains import services as domains
from tenants.models import Domain

SCHEDULER = Actor.system("domain scheduler")


# "Check now" pressed and its job not finished yet: the owner's page shows "checking".
_QUEUED = "domain-check-queued:{}"
_QUEUED_SECONDS = 600  # a lost job must not leave the page "checking" forever


def check_queued_mark(domain_id: int) -> None:
    cache.set(_QUEUED.format(domain_id), 1, _QUEUED_SECONDS)


def check_queued(domain_id: int) -> bool:
    return bool(cache.get(_QUEUED.format(domain_id)))


@job("default")
def verify_domain_job(domain_id: int, actor_type: str, actor_name: str) -> str:
    try:
        connection.set_schema_to_public()
        domain = Domain.objects.select_related("tenant").filter(pk=domain_id).first()
        if domain is None:
            return "gone"
        result = domains.domain_verify(domain=domain, actor=Actor.for_job(actor_type, actor_name))
        return result.domain.status if result.domain else "removed"
    finally:
        cache.delete(_QUEUED.format(domain_id))


@job("default")
def verify_due_domains_job() -> int:
    """Cron: re-check every domain whose next check is due (pending backoff, active re-checks)."""
    # One run at a time: a long run must not overlap the next minute's and check domains twice.
    lock = django_rq.get_connection("default").lock("platform:domains-verify-due", timeout=1800)
    if not lock.acquire(blocking=False):
        return 0
    try:
        connection.set_schema_to_public()
        due = domains.domains_due()
        return len(domains.domains_verify(domains=due, actor=Actor.for_job(*SCHEDULER.job_args)))
    finally:
        lock.release()


@job("default")
def issue_certificate_job(domain_id: int, actor_type: str, actor_name: str) -> str:
    connection.set_schema_to_public()
    domain = Domain.objects.select_related("tenant").filter(pk=domain_id).first()
    if domain is None or domain.status not in certificates.ISSUABLE:
        return "skipped"
    try:
        cert = certificates.certificate_issue(domain=domain, actor=Actor.for_job(actor_type, actor_name))
    except certificates.IssuanceBusy:
        # Another worker is on it: this duplicate has nothing to do.
        return "busy"
    return cert.status


def issue_certificate_jobs_enqueue(requests: list[tuple[int, Actor]]) -> None:
    """Queue certificate jobs in one round trip, once the caller's state changes are committed."""
    if not requests:
        return
    queue = django_rq.get_queue(issue_certificate_job.queue_name)
    jobs = [Queue.prepare_data(issue_certificate_job, (pk, *actor.job_args)) for pk, actor in requests]
    transaction.on_commit(lambda: queue.enqueue_many(jobs))


@job("default")
def certificates_due_job() -> int:
    """Cron: queue renewals (ACME_RENEW_DAYS before expiry) and retries of failed requests."""
    connection.set_schema_to_public()
    due = certificates.certificates_due()
    issue_certificate_jobs_enqueue([(domain.pk, SCHEDULER) for domain in due])
    if platform_certificate.platform_certificate_due():
        issue_platform_certificate_job.delay(*SCHEDULER.job_args)
        return len(due) + 1
    return len(due)


@job("default")
def issue_platform_certificate_job(actor_type: str, actor_name: str) -> str:
    """Issue or renew the platform wildcard (DNS-01); a duplicate while one runs does nothing."""
    try:
        cert = platform_certificate.platform_certificate_issue(actor=Actor.for_job(actor_type, actor_name))
    except certificates.IssuanceBusy:
        return "busy"
    return cert.status


@job("default")
def render_edge_job() -> str:
    # Renders coalesce: one at a time, and the one running picks up every change made before it.
    lock = django_rq.get_connection("default").lock("platform:edge-render", timeout=600)
    if not lock.acquire(blocking=True, blocking_timeout=600):
        return "busy"
    try:
        result = edge.edge_render(actor=Actor.for_job(*SCHEDULER.job_args))
    finally:
        lock.release()
    return f"{result.domains} domains, changed={result.changed}"
