"""Monitoring services: probes now; alert rules, channels and incidents below."""

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from monitoring.errors import MonitoringError
from monitoring.models import ProbeResult
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
        target.url, connect_to=_connect_to(target.host), timeout=settings.PROBE_TIMEOUT_SECONDS,
        ca_file=settings.PROBE_CA_FILE, verify=settings.PROBE_VERIFY_TLS,
    )


def probe_run(*, tenant: Tenant | None = None) -> ProbeRunSummary:
    """Probe every active shop host (or one tenant's), with bounded concurrency, and store the results."""
    if tenant is not None and tenant.status != Tenant.Status.ACTIVE:
        raise MonitoringError(
            f"Tenant {tenant.subdomain!r} is {tenant.status}; only active shops are probed (resume it first)."
        )
    targets = probe_targets(tenant=tenant)
    if not targets:
        return ProbeRunSummary(0, 0, [])
    checked_at = timezone.now()
    with ThreadPoolExecutor(max_workers=max(1, min(settings.PROBE_CONCURRENCY, len(targets)))) as pool:
        outcomes = list(pool.map(_probe, targets))
    connection.set_schema_to_public()
    ProbeResult.objects.bulk_create(
        [
            ProbeResult(
                tenant_id=t.tenant_id, host=t.host, url=t.url, checked_at=checked_at, ok=o.ok,
                status_code=o.status_code, latency_ms=o.latency_ms, error=o.error,
                tls_expires_at=o.tls_expires_at,
            )
            for t, o in zip(targets, outcomes, strict=True)
        ],
        batch_size=1000,
    )
    down = [(t.host, o.error) for t, o in zip(targets, outcomes, strict=True) if not o.ok]
    logger.info("probed %d host(s): %d up, %d down", len(targets), len(targets) - len(down), len(down))
    return ProbeRunSummary(len(targets), len(targets) - len(down), down)


def probe_prune(*, now=None) -> int:
    """Delete probe results older than PROBE_RETENTION_DAYS."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.PROBE_RETENTION_DAYS)
    connection.set_schema_to_public()
    deleted, _ = ProbeResult.objects.filter(checked_at__lt=cutoff).delete()
    return deleted
