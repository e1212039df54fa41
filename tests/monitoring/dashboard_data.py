"""Probe history and incidents for the dashboard tests (rows written directly, as the probes would)."""

from datetime import timedelta

from django.utils import timezone

from monitoring.models import ProbeResult
from monitoring.services import rules_evaluate


def seed_dashboard(make_tenant) -> dict:
    now = timezone.now()
    shops = {name: make_tenant(name) for name in ("acme", "globex", "initech")}
    make_tenant("umbrella", plan="starter").set_status("suspended", "unpaid")
    rows = []
    for hours in [*range(24), *range(24, 30 * 24, 3)]:  # every 10 min today, every 3 h before
        for minutes in ((0, 10, 20, 30, 40, 50) if hours < 24 else (0,)):
            at = now - timedelta(hours=hours, minutes=minutes)
            for name, tenant in shops.items():
                globex_out = name == "globex" and hours in (5, 6, 7, 100)
                ok = not globex_out and not (name == "initech" and hours < 2)
                rows.append(ProbeResult(
                    tenant=tenant, host=f"{name}.localhost", url=f"https://{name}.localhost/", checked_at=at,
                    ok=ok, status_code=200 if ok else 502, error="" if ok else "HTTP 502",
                    latency_ms=40 + (hours * 7 + minutes) % 90 + (300 if name == "globex" else 0),
                    tls_expires_at=now + timedelta(days=5 if name == "acme" else 80),
                ))
    ProbeResult.objects.bulk_create(rows)
    rules_evaluate()
    return shops
