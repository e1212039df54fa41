"""Probe rounds recorded through the same service as real probes (for history the tests cannot wait for)."""

from datetime import datetime

from monitoring.probes import ProbeOutcome
from monitoring.selectors import ProbeTarget
from monitoring.services.probing import probe_record


def record(tenant, host: str, *, ok: bool, at: datetime, latency_ms: float | None = 50.0,
           tls_expires_at: datetime | None = None, error: str = "HTTP 502") -> None:
    url = f"https://{host}/"
    outcome = ProbeOutcome(url, ok, 200 if ok else 502, latency_ms, "" if ok else error, tls_expires_at)
    probe_record(results=[(ProbeTarget(str(tenant.pk), host, url), outcome)], checked_at=at)
