"""Probe history and incidents for the dashboard tests (rows written directly, as the probes would)."""

from datetime import timedelta

from django.utils import timezone

from monitoring.probes import ProbeOutcome
from monitoring.selectors import ProbeTarget
from monitoring.services.alerts import rules_evaluate
from monitoring.services.probing import probe_record


def seed_dashboard(make_tenant) -> dict:
    now = timezone.now()
    shops = {name: make_tenant(name) for name in ("acme", "globex", "initech")}
    make_tenant("umbrella", plan="starter").set_status("suspended", "unpaid")
    for hours in [*range(30 * 24 - 1, 24, -6), *range(24, -1, -1)]:  # every 6 h, then 20 min today
        for minutes in (40, 20, 0) if hours < 24 else (0,):
            at = now - timedelta(hours=hours, minutes=minutes)
            results = []
            for name, tenant in shops.items():
                globex_out = name == "globex" and hours in (5, 6, 7, 100)
                ok = not globex_out and not (name == "initech" and hours == 0)
                url = f"https://{name}.localhost/"
                latency = 40 + (hours * 7 + minutes) % 90 + (300 if name == "globex" else 0)
                expires = now + timedelta(days=5 if name == "acme" else 80)
                status, error = (200, "") if ok else (502, "HTTP 502")
                outcome = ProbeOutcome(url, ok, status, latency, error, expires)
                results.append((ProbeTarget(str(tenant.pk), f"{name}.localhost", url), outcome))
            probe_record(results=results, checked_at=at)
    rules_evaluate()
    seed_backups(shops, now)
    return shops


MIB = 1024 * 1024


def seed_backups(shops: dict, now) -> None:
    """30 days of nightly verified backups, growing; a failed one and one too old to show."""
    from backups.models import Backup

    rows = []
    for days_ago in range(35):
        at = now - timedelta(days=days_ago, hours=1)
        for n, (name, tenant) in enumerate(shops.items()):
            rows.append(Backup(
                kind=Backup.Kind.TENANT, tenant=tenant, tenant_label=name, schema_name=tenant.schema_name,
                status=Backup.Status.VERIFIED, size_bytes=(20 + 30 * n) * MIB + (35 - days_ago) * MIB // 2,
                created_at=at, finished_at=at,
            ))
        rows.append(Backup(
            kind=Backup.Kind.PLATFORM, status=Backup.Status.VERIFIED, size_bytes=6 * MIB, created_at=at,
            finished_at=at,
        ))
        if days_ago == 3:
            rows.append(Backup(kind=Backup.Kind.TENANT, tenant=shops["acme"], tenant_label="acme",
                               status=Backup.Status.FAILED, size_bytes=999 * MIB, created_at=at))
    Backup.objects.bulk_create(rows)
