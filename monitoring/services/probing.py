"""Uptime probes: run a round over every active shop host, record it, prune old results."""

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.db import connection
from monitoring.errors import MonitoringError
from monitoring.models import ProbeHourly, ProbeResult, ProbeState
from monitoring.probes import ProbeOutcome, probe_url
from monitoring.selectors import ProbeTarget, probe_targets
from tenants.models import Tenant

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeRunSummary:
    total: int
    up: int
    down: list[tuple[str, str]]  # (host, error)


def _connect_to(host: str) -> str:
    mapping = settings.PROBE_CONNECT_TO
    return mapping.get(host) or mapping.get("*", "")


def _probe(target: ProbeTarget) -> ProbeOutcome:
    return probe_url(
        target.url,
        connect_to=_connect_to(target.host),
        timeout=settings.PROBE_TIMEOUT_SECONDS,
        ca_file=settings.PROBE_CA_FILE,
        verify=settings.PROBE_VERIFY_TLS,
    )


def probe_run(*, tenant: Tenant | None = None) -> ProbeRunSummary:
    """Probe every active shop host (or one tenant's), with bounded concurrency, and store the results."""
    if tenant is not None and tenant.status != Tenant.Status.ACTIVE:
        raise MonitoringError(
            f"Tenant {tenant.subdomain!r} is {tenant.status}; only active shops are probed (resume it first)."
        )
    targets = probe_targets(tenant=tenant)
    if not targets:
        if tenant is None:
            ProbeState.objects.all().delete()  # no shop left to watch: no stale "last probe" either
        return ProbeRunSummary(0, 0, [])
    with ThreadPoolExecutor(max_workers=max(1, min(settings.PROBE_CONCURRENCY, len(targets)))) as pool:
        outcomes = list(pool.map(_probe, targets))
    results = list(zip(targets, outcomes, strict=True))
    probe_record(results=results, checked_at=timezone.now(), complete=tenant is None)
    down = [(t.host, o.error) for t, o in results if not o.ok]
    logger.info("probed %d host(s): %d up, %d down", len(targets), len(targets) - len(down), len(down))
    return ProbeRunSummary(len(targets), len(targets) - len(down), down)


_HOURLY_UPSERT = """
    INSERT INTO monitoring_probehourly (host, tenant_id, hour, total, up, latency_ms_sum, latency_count)
    SELECT * FROM unnest(%s::varchar[], %s::uuid[], %s::timestamptz[], %s::int[], %s::int[], %s::float8[],
                         %s::int[])
    ON CONFLICT (host, hour) DO UPDATE SET
        total = monitoring_probehourly.total + EXCLUDED.total,
        up = monitoring_probehourly.up + EXCLUDED.up,
        latency_ms_sum = monitoring_probehourly.latency_ms_sum + EXCLUDED.latency_ms_sum,
        latency_count = monitoring_probehourly.latency_count + EXCLUDED.latency_count
"""


def probe_record(
    *, results: list[tuple[ProbeTarget, ProbeOutcome]], checked_at: datetime, complete: bool = False
) -> None:
    """Store one probe round: raw rows, each host's latest state (and failure streak), hourly counts.

    `complete` means every target was probed: states of hosts no longer probed are dropped.
    """
    connection.set_schema_to_public()
    hosts = [t.host for t, _ in results]
    with transaction.atomic():
        ProbeResult.objects.bulk_create(
            [
                ProbeResult(
                    tenant_id=t.tenant_id,
                    host=t.host,
                    url=t.url,
                    checked_at=checked_at,
                    ok=o.ok,
                    status_code=o.status_code,
                    latency_ms=o.latency_ms,
                    error=o.error,
                    tls_expires_at=o.tls_expires_at,
                )
                for t, o in results
            ],
            batch_size=2000,
        )
        before = {
            host: (failures, ok, changed_at)
            for host, failures, ok, changed_at in ProbeState.objects.filter(host__in=hosts).values_list(
                "host", "failures", "ok", "changed_at"
            )
        }
        states = []
        for t, o in results:
            failures, was_ok, changed_at = before.get(t.host, (0, None, checked_at))
            states.append(
                ProbeState(
                    host=t.host,
                    tenant_id=t.tenant_id,
                    url=t.url,
                    checked_at=checked_at,
                    ok=o.ok,
                    status_code=o.status_code,
                    latency_ms=o.latency_ms,
                    error=o.error,
                    tls_expires_at=o.tls_expires_at,
                    failures=0 if o.ok else failures + 1,
                    changed_at=changed_at if was_ok == o.ok else checked_at,
                )
            )
        ProbeState.objects.bulk_create(
            states,
            batch_size=2000,
            update_conflicts=True,
            unique_fields=["host"],
            update_fields=[
                "tenant",
                "url",
                "checked_at",
                "ok",
                "status_code",
                "latency_ms",
                "error",
                "tls_expires_at",
                "failures",
                "changed_at",
            ],
        )
        if complete:
            ProbeState.objects.exclude(host__in=hosts).delete()
        hour = checked_at.replace(minute=0, second=0, microsecond=0)
        with connection.cursor() as cursor:
            cursor.execute(
                _HOURLY_UPSERT,
                [
                    hosts,
                    [t.tenant_id for t, _ in results],
                    [hour] * len(results),
                    [1] * len(results),
                    [int(o.ok) for _, o in results],
                    [o.latency_ms or 0.0 for _, o in results],
                    [int(o.latency_ms is not None) for _, o in results],
                ],
            )


def probe_prune(*, now: datetime | None = None) -> int:
    """Delete raw probe results older than PROBE_RETENTION_DAYS and hourly counts older than
    PROBE_HOURLY_RETENTION_DAYS. Returns the number of raw results deleted."""
    now = now or timezone.now()
    connection.set_schema_to_public()
    deleted, _ = ProbeResult.objects.filter(
        checked_at__lt=now - timedelta(days=settings.PROBE_RETENTION_DAYS)
    ).delete()
    ProbeHourly.objects.filter(hour__lt=now - timedelta(days=settings.PROBE_HOURLY_RETENTION_DAYS)).delete()
    return deleted
