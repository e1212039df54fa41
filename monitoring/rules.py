"""The built-in alert rules. Each evaluator returns what is wrong right now as Findings; the
engine in services.rules_evaluate turns them into incidents (and resolves what is gone)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from rq import Worker

from core.admin_links import admin_path
from core.facts import SourceUnavailable, fact_source
from monitoring.health import redis_client
from monitoring.models import AlertRule
from monitoring.probes import days_left
from monitoring.selectors import latest_probes, recent_failures
from tenants.models import Tenant

Kind = AlertRule.Kind


@dataclass(frozen=True)
class Finding:
    key: str  # what is at fault, unique within the rule (host, tenant id, queue ...)
    title: str
    tenant_id: str | None = None
    link: str = ""
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RuleSpec:
    threshold: int
    severity: str
    threshold_means: str
    summary: str


SPECS: dict[str, RuleSpec] = {
    Kind.CERTIFICATE_EXPIRING: RuleSpec(
        14,
        "warning",
        "days before expiry",
        "A certificate served for a shop host (read by the uptime probes, and from the certificates "
        "source when configured) expires within the threshold, or has expired.",
    ),
    Kind.BACKUP_STALE: RuleSpec(
        30,
        "critical",
        "minutes of grace past the RPO",
        "A tenant's newest good backup is older than its plan's RPO plus the grace, or it has none.",
    ),
    Kind.RESTORE_DRILL_FAILED: RuleSpec(
        7, "critical", "days a failed drill stays reportable", "The latest restore drill of a scope failed."
    ),
    Kind.DEPLOYMENT_FAILED: RuleSpec(
        72,
        "critical",
        "hours a failed deployment stays reportable",
        "The latest deployment of an environment failed or was rolled back.",
    ),
    Kind.SHOP_DOWN: RuleSpec(
        3, "critical", "consecutive failed probes", "A shop host failed this many uptime probes in a row."
    ),
    Kind.QUEUE_BACKLOG: RuleSpec(
        100, "warning", "queued jobs", "More jobs than the threshold wait in an RQ queue."
    ),
    Kind.FAILED_JOBS: RuleSpec(
        1, "warning", "failed jobs", "At least this many jobs sit in a queue's failed-job registry."
    ),
    Kind.WORKER_MISSING: RuleSpec(
        1, "critical", "live workers needed per queue", "Fewer live RQ workers than needed listen on a queue."
    ),
    Kind.OFFSITE_COPY_LAG: RuleSpec(
        120,
        "critical",
        "minutes an object may wait for its off-site copy",
        "The oldest verified dump or export not yet copied (and checked) in the second store has waited "
        "longer than the threshold: a region lost now would lose it.",
    ),
    Kind.OFFSITE_COPY_FAILED: RuleSpec(
        3,
        "warning",
        "failed attempts in a row",
        "Off-site copies failed this many times in a row (they are retried with a backoff), or a far copy "
        "no longer matches its checksum.",
    ),
    Kind.DR_DRILL_FAILED: RuleSpec(
        35,
        "critical",
        "days within which a disaster-recovery drill must have passed",
        "The latest disaster-recovery drill (platform and a shop restored from the second store alone) "
        "failed, or none passed within the threshold.",
    ),
    Kind.WAL_ARCHIVE_STALE: RuleSpec(
        60,
        "critical",
        "seconds of platform data at risk (the RPO)",
        "The platform database's newest archived WAL is older than the threshold while newer WAL "
        "waits, archiving fails, or the server does not archive at all (continuous archive on).",
    ),
}


def _tenant_link(tenant_id) -> str:
    return admin_path(Tenant, pk=tenant_id) if tenant_id else ""


def _certificates(rule: AlertRule, now: datetime) -> list[Finding]:
    expiring: dict[str, Finding] = {}

    def consider(host: str, tenant_id, expires: datetime, link: str, origin: str) -> None:
        left = days_left(expires, now)
        if left is None or left >= rule.threshold:
            return
        title = (
            f"Certificate for {host} has expired"
            if left <= 0
            else f"Certificate for {host} expires in {left:.1f} day(s)"
        )
        expiring[host] = Finding(
            host,
            title,
            str(tenant_id) if tenant_id else None,
            link or _tenant_link(tenant_id),
            {"expires_at": expires.isoformat(), "days_left": left, "seen_by": origin},
        )

    for probe in latest_probes():
        if probe["tls_expires_at"] is not None:
            consider(probe["host"], probe["tenant_id"], probe["tls_expires_at"], "", "uptime probe")
    try:
        facts = fact_source("certificates")()
    except SourceUnavailable:
        facts = []  # the probes' view of certificates is enough on its own
    for fact in facts:
        consider(fact.host, fact.tenant_id, fact.expires_at, fact.link, "certificates source")
    return list(expiring.values())


def _backups(rule: AlertRule, now: datetime) -> list[Finding]:
    grace = timedelta(minutes=rule.threshold)
    findings = []
    for fact in fact_source("backups")():
        if fact.last_success_at is None:
            if fact.active_since and now - fact.active_since <= fact.rpo + grace:
                continue  # a new shop: its first scheduled backup is not due yet
            title, age = "Tenant has no good backup", None
        elif now - fact.last_success_at > fact.rpo + grace:
            age = now - fact.last_success_at
            hours, rpo_hours = age.total_seconds() / 3600, fact.rpo.total_seconds() / 3600
            title = f"Newest backup is {hours:.1f} h old (RPO {rpo_hours:g} h)"
        else:
            continue
        findings.append(
            Finding(
                str(fact.tenant_id),
                title,
                str(fact.tenant_id),
                fact.link or _tenant_link(fact.tenant_id),
                {
                    "last_success_at": fact.last_success_at and fact.last_success_at.isoformat(),
                    "rpo_hours": fact.rpo.total_seconds() / 3600,
                },
            )
        )
    return findings


def _drills(rule: AlertRule, now: datetime) -> list[Finding]:
    since = now - timedelta(days=rule.threshold)
    return [
        Finding(
            fact.key,
            f"Restore drill of {fact.key} failed: {fact.detail}"[:300],
            fact.tenant_id,
            fact.link,
            {"finished_at": fact.finished_at.isoformat(), "detail": fact.detail},
        )
        for fact in fact_source("drills")()
        if not fact.ok and fact.finished_at >= since
    ]


def _deployments(rule: AlertRule, now: datetime) -> list[Finding]:
    since = now - timedelta(hours=rule.threshold)
    return [
        Finding(
            fact.environment,
            f"Deployment {fact.id} to {fact.environment} {fact.status.replace('_', ' ')}"
            + (f": {fact.detail}" if fact.detail else ""),
            None,
            fact.link,
            {"deployment": fact.id, "status": fact.status, "finished_at": fact.finished_at.isoformat()},
        )
        for fact in fact_source("deployments")()
        if fact.status in ("failed", "rolled_back") and fact.finished_at >= since
    ]


def _shops_down(rule: AlertRule, now: datetime) -> list[Finding]:
    needed = max(1, rule.threshold)
    return [
        Finding(
            host,
            f"{host} is down ({count} failed probes in a row): {error}"[:300],
            tenant_id,
            _tenant_link(tenant_id),
            {"failed_probes": count, "last_error": error},
        )
        for host, (tenant_id, count, error) in recent_failures(at_least=needed).items()
        if count >= needed
    ]


def _queues(rule: AlertRule, now: datetime) -> list[Finding]:
    from monitoring.collectors import queue_states

    states = queue_states(redis_client())
    if rule.kind == Kind.QUEUE_BACKLOG:
        return [
            Finding(
                q, f"{s['queued']} jobs waiting in queue {q!r}", None, "/django-rq/", {"queued": s["queued"]}
            )
            for q, s in states.items()
            if s["queued"] > rule.threshold
        ]
    return [
        Finding(
            q, f"{s['failed']} failed job(s) in queue {q!r}", None, "/django-rq/", {"failed": s["failed"]}
        )
        for q, s in states.items()
        if s["failed"] >= max(1, rule.threshold)
    ]


def _workers(rule: AlertRule, now: datetime) -> list[Finding]:
    workers = Worker.all(connection=redis_client())
    findings = []
    for queue in settings.RQ_QUEUES:
        live = sum(1 for w in workers if queue in w.queue_names())
        if live < rule.threshold:
            findings.append(
                Finding(
                    queue,
                    f"{live} live worker(s) on queue {queue!r}, need {rule.threshold}",
                    None,
                    "/django-rq/",
                    {"live": live},
                )
            )
    return findings


def _offsite(rule: AlertRule, now: datetime) -> list[Finding]:
    """Copy lag, failing copies and the DR drill, from the off-site fact (none: no second store)."""
    findings = []
    for fact in fact_source("offsite")():
        if rule.kind == Kind.OFFSITE_COPY_LAG and fact.lag_seconds > rule.threshold * 60:
            findings.append(
                Finding(
                    "offsite",
                    f"{fact.waiting} object(s) not yet off-site; the oldest has waited "
                    f"{fact.lag_seconds / 60:.0f} min (limit {rule.threshold} min)",
                    None,
                    fact.link,
                    {"lag_seconds": fact.lag_seconds, "waiting": fact.waiting},
                )
            )
        elif rule.kind == Kind.OFFSITE_COPY_FAILED:
            failing = [
                f for f in fact.failures if f.status == "corrupt" or f.attempts >= max(1, rule.threshold)
            ]
            if failing:
                first = failing[0]
                findings.append(
                    Finding(
                        "offsite",
                        f"{len(failing)} off-site copy(ies) failing, e.g. {first.key}: {first.reason}"[:300],
                        None,
                        fact.link,
                        {"failing": [(f.key, f.status, f.attempts, f.reason[:200]) for f in failing[:10]]},
                    )
                )
        elif rule.kind == Kind.DR_DRILL_FAILED:
            since = now - timedelta(days=rule.threshold)
            if fact.drill_finished_at is not None and not fact.drill_ok:
                key, title = "dr-drill-failed", f"Disaster-recovery drill failed: {fact.drill_detail}"
            elif fact.last_passed_drill_at is None or fact.last_passed_drill_at < since:
                key, title = (
                    "dr-drill-overdue",
                    f"No disaster-recovery drill passed in the last {rule.threshold} days",
                )
            else:
                continue
            findings.append(
                Finding(
                    key,
                    title[:300],
                    None,
                    fact.drill_link,
                    {"finished_at": fact.drill_finished_at and fact.drill_finished_at.isoformat()},
                )
            )
    return findings


def _wal_archive(rule: AlertRule, now: datetime) -> list[Finding]:
    findings = []
    for fact in fact_source("wal_archive")():
        if not fact.configured:
            title = f"Platform WAL is not archived: {fact.detail}"
        elif fact.failing:
            title = f"Platform WAL archiving fails: {fact.detail}"
        elif fact.age_seconds is None:
            title = "Platform WAL was never archived"
        elif fact.age_seconds > rule.threshold:
            title = (
                f"Platform data at risk: {fact.age_seconds:.0f} s of WAL not archived "
                f"(RPO {rule.threshold} s)"
            )
        else:
            continue
        details = {"age_seconds": fact.age_seconds, "detail": fact.detail}
        findings.append(Finding("platform", title[:300], None, fact.link, details))
    return findings


EVALUATORS: dict[str, Callable[[AlertRule, datetime], list[Finding]]] = {
    Kind.CERTIFICATE_EXPIRING: _certificates,
    Kind.BACKUP_STALE: _backups,
    Kind.RESTORE_DRILL_FAILED: _drills,
    Kind.DEPLOYMENT_FAILED: _deployments,
    Kind.SHOP_DOWN: _shops_down,
    Kind.QUEUE_BACKLOG: _queues,
    Kind.FAILED_JOBS: _queues,
    Kind.WORKER_MISSING: _workers,
    Kind.OFFSITE_COPY_LAG: _offsite,
    Kind.OFFSITE_COPY_FAILED: _offsite,
    Kind.DR_DRILL_FAILED: _offsite,
    Kind.WAL_ARCHIVE_STALE: _wal_archive,
}
