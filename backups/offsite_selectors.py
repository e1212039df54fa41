"""Read side of off-site copies: the fact monitoring's rules read, and the /metrics gauges.

Registered by BackupsConfig.ready(): the fact through core.facts, the gauges through monitoring's
metric-source registry (backups may import monitoring; monitoring never imports backups).
"""

from django.db.models import Count
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from backups.models import DisasterRecoveryDrill, OffsiteCopy
from backups.offsite_storage import offsite_configured
from backups.services.offsite import offsite_lag
from core.admin_links import admin_path
from core.facts import OffsiteFact, OffsiteFailure
from monitoring.metrics import metric_source

FAILURES_LISTED = 50


def offsite_facts() -> list[OffsiteFact]:
    """One fact while a second store is configured (none otherwise: nothing to alert on)."""
    if not offsite_configured():
        return []
    lag, waiting = offsite_lag()
    failing = OffsiteCopy.objects.filter(status__in=OffsiteCopy.RETRYABLE).order_by("-attempts")
    failures = tuple(
        OffsiteFailure(
            c.location,
            c.status,
            c.attempts,
            c.status_reason[:300],
            str(c.tenant_id) if c.tenant_id else None,
            admin_path(c),
        )
        for c in failing[:FAILURES_LISTED]
    )
    latest = DisasterRecoveryDrill.objects.filter(finished_at__isnull=False).first()
    passed = DisasterRecoveryDrill.objects.filter(passed=True).first()
    return [
        OffsiteFact(
            lag_seconds=lag,
            waiting=waiting,
            failures=failures,
            drill_finished_at=latest.finished_at if latest else None,
            drill_ok=bool(latest and latest.passed),
            drill_detail=latest.reason if latest else "",
            drill_rto_seconds=latest.rto_seconds if latest else None,
            last_passed_drill_at=passed.finished_at if passed else None,
            link=admin_path(OffsiteCopy, "changelist"),
            drill_link=admin_path(latest) if latest else admin_path(DisasterRecoveryDrill, "changelist"),
        )
    ]


@metric_source("offsite")
def offsite_gauges():
    """Copy lag, copies by state and the latest DR drill; nothing without a second store."""
    facts = offsite_facts()
    if not facts:
        return []
    fact = facts[0]
    lag = GaugeMetricFamily(
        "platform_offsite_copy_lag_seconds",
        "How long the oldest dump or export not yet copied and checked in the second store has waited",
    )
    lag.add_metric([], round(fact.lag_seconds, 1))
    waiting = GaugeMetricFamily(
        "platform_offsite_objects_waiting", "Dumps and exports not yet safely off-site"
    )
    waiting.add_metric([], fact.waiting)
    copies = GaugeMetricFamily("platform_offsite_copies", "Off-site copies by status", labels=["status"])
    counts = dict.fromkeys(OffsiteCopy.Status.values, 0)
    for row in OffsiteCopy.objects.values("status").annotate(n=Count("pk")):
        counts[row["status"]] = row["n"]
    for status, n in counts.items():
        copies.add_metric([status], n)
    families = [lag, waiting, copies]
    if fact.drill_finished_at is not None:
        ok = GaugeMetricFamily("platform_dr_drill_ok", "1 when the latest disaster-recovery drill passed")
        ok.add_metric([], 1 if fact.drill_ok else 0)
        age = GaugeMetricFamily("platform_dr_drill_age_seconds", "Seconds since the latest DR drill ended")
        age.add_metric([], round((timezone.now() - fact.drill_finished_at).total_seconds()))
        families += [ok, age]
        if fact.drill_rto_seconds is not None:
            rto = GaugeMetricFamily("platform_dr_drill_rto_seconds", "Measured RTO of the latest DR drill")
            rto.add_metric([], round(fact.drill_rto_seconds, 2))
            families.append(rto)
    return families
