"""Read-side queries for monitoring: probe targets, uptime, latest probe per host."""

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDay
from django.utils import timezone

from core.db import connection
from core.facts import SourceUnavailable, fact_source
from monitoring.models import ProbeHourly, ProbeState
from tenants.models import Domain, Tenant

# One slot of a host's probe series: (probes, successful probes, mean latency in ms or None).
Slot = tuple[int, int, float | None]


class LatestProbe(TypedDict):
    """A host's latest probe, as latest_probes() returns it (ProbeState.values())."""

    host: str
    tenant_id: uuid.UUID
    tenant__subdomain: str
    checked_at: datetime
    ok: bool
    status_code: int | None
    latency_ms: float | None
    error: str
    tls_expires_at: datetime | None
    failures: int


@dataclass(frozen=True)
class ProbeTarget:
    tenant_id: str
    host: str
    url: str


def probe_url_for(host: str) -> str:
    port = f":{settings.PROBE_PORT}" if settings.PROBE_PORT else ""
    return f"{settings.PROBE_SCHEME}://{host}{port}{settings.PROBE_PATH}"


def probe_targets(*, tenant: Tenant | None = None) -> list[ProbeTarget]:
    """Every active tenant's primary host and its active custom domains."""
    connection.set_schema_to_public()
    domains = Domain.objects.filter(
        Q(is_primary=True) | Q(kind=Domain.Kind.CUSTOM),
        tenant__status=Tenant.Status.ACTIVE,
        status__in=Domain.ROUTABLE_STATUSES,
    )
    if tenant is not None:
        domains = domains.filter(tenant=tenant)
    rows = domains.order_by("domain").values_list("tenant_id", "domain")
    return [ProbeTarget(str(t), host, probe_url_for(host)) for t, host in rows]


def uptime_percent(
    *, since: datetime, tenant_ids: Sequence[uuid.UUID | str] | None = None
) -> dict[str, float]:
    """Share of successful probes per tenant since `since` (hour granularity), in percent.

    Tenants never probed in the window are absent.
    """
    rows = ProbeHourly.objects.filter(hour__gte=since.replace(minute=0, second=0, microsecond=0))
    if tenant_ids is not None:
        rows = rows.filter(tenant_id__in=tenant_ids)
    stats = rows.values("tenant_id").annotate(total=Sum("total"), up=Sum("up")).order_by()
    return {str(r["tenant_id"]): round(100.0 * r["up"] / r["total"], 2) for r in stats if r["total"]}


def uptime_windows(
    *, tenant_ids: Sequence[uuid.UUID | str] | None = None, now: datetime | None = None
) -> dict[str, dict[str, float | None]]:
    now = now or timezone.now()
    day = uptime_percent(since=now - timedelta(hours=24), tenant_ids=tenant_ids)
    month = uptime_percent(since=now - timedelta(days=30), tenant_ids=tenant_ids)
    return {t: {"24h": day.get(t), "30d": month[t]} for t in month}


def latest_probes(*, within: timedelta = timedelta(days=1)) -> list[LatestProbe]:
    """The latest probe of each host probed within `within`, as dicts (one row per host)."""
    since = timezone.now() - within
    return list(
        ProbeState.objects.filter(checked_at__gte=since).values(
            "host",
            "tenant_id",
            "tenant__subdomain",
            "checked_at",
            "ok",
            "status_code",
            "latency_ms",
            "error",
            "tls_expires_at",
            "failures",
        )
    )


def recent_failures(*, at_least: int) -> dict[str, tuple[str, int, str]]:
    """Hosts whose latest probes failed at least `at_least` times in a row: (tenant id, count, error)."""
    rows = ProbeState.objects.filter(failures__gte=max(1, at_least)).values_list(
        "host", "tenant_id", "failures", "error"
    )
    return {host: (str(tenant_id), failures, error) for host, tenant_id, failures, error in rows}


def _series_by_host(hosts: list[str], *, since: datetime, daily: bool) -> dict[str, dict[datetime, Slot]]:
    hourly = ProbeHourly.objects.filter(host__in=hosts, hour__gte=since)
    # (host, slot, probes, successful probes, latency sum in ms, latency count)
    rows: Iterable[tuple[str, datetime, int, int, float, int]]
    if daily:
        per_day = (
            hourly.annotate(slot=TruncDay("hour"))
            .values("host", "slot")
            .annotate(t=Sum("total"), u=Sum("up"), ls=Sum("latency_ms_sum"), lc=Sum("latency_count"))
            .order_by()
        )
        rows = [(r["host"], r["slot"], r["t"], r["u"], r["ls"], r["lc"]) for r in per_day]
    else:
        rows = hourly.values_list("host", "hour", "total", "up", "latency_ms_sum", "latency_count")
    out: dict[str, dict[datetime, Slot]] = {}
    for host, slot, total, up, latency_sum, latency_count in rows:
        out.setdefault(host, {})[slot] = (total, up, latency_sum / latency_count if latency_count else None)
    return out


def dashboard_shops(*, now: datetime | None = None, limit: int = 30) -> list[dict[str, Any]]:
    """The shops to show on the dashboard, worst first, with hourly (24 h) and daily (30 d) series."""
    now = now or timezone.now()
    latest = sorted(latest_probes(), key=lambda p: (p["ok"], -(p["latency_ms"] or 0)))[:limit]
    hosts = [p["host"] for p in latest]
    hour0 = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    day0 = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=29)
    hourly = _series_by_host(hosts, since=hour0, daily=False)
    daily = _series_by_host(hosts, since=day0, daily=True)
    uptimes = uptime_windows(tenant_ids=list({p["tenant_id"] for p in latest}), now=now)
    shops = []
    for p in latest:
        hours = [hourly.get(p["host"], {}).get(hour0 + timedelta(hours=i)) for i in range(24)]
        days = [daily.get(p["host"], {}).get(day0 + timedelta(days=i)) for i in range(30)]
        shops.append(
            {
                **p,
                "uptime": uptimes.get(str(p["tenant_id"]), {}),
                "hours": [(h[0], h[1]) if h else None for h in hours],
                "days": [(d[0], d[1]) if d else None for d in days],
                "latency_hours": [h[2] if h else None for h in hours],
            }
        )
    return shops


def dashboard_counts() -> dict[str, list[tuple[str, int]]]:
    connection.set_schema_to_public()
    tenant_status = dict(Tenant.Status.choices)
    domain_status = dict(Domain.Status.choices)
    by_status = Tenant.objects.values_list("status").annotate(n=Count("pk")).order_by("-n")
    by_plan = (
        Tenant.objects.exclude(status=Tenant.Status.DELETED)
        .values_list("plan__name")
        .annotate(n=Count("pk"))
        .order_by("-n")
    )
    domains = Domain.objects.values_list("status").annotate(n=Count("pk")).order_by("-n")
    return {
        "tenants_by_status": [(tenant_status.get(s, s), n) for s, n in by_status],
        "tenants_by_plan": list(by_plan),
        "domains_by_status": [(domain_status.get(s, s), n) for s, n in domains],
    }


def dashboard_facts(*, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Backups past their RPO, the latest drills and the live release per environment, from the wired
    fact sources; each part is {"unavailable": reason} until its source is configured."""

    now = now or timezone.now()
    out: dict[str, dict[str, Any]] = {}
    try:
        facts = list(fact_source("backups")())
        subdomains: dict[uuid.UUID | str, str] = dict(Tenant.objects.values_list("id", "subdomain"))
        late = [
            {
                "tenant": subdomains.get(_as_uuid(f.tenant_id), f.tenant_id),
                "last": f.last_success_at,
                "rpo_hours": f.rpo.total_seconds() / 3600,
                "link": f.link,
            }
            for f in facts
            if f.last_success_at is None or now - f.last_success_at > f.rpo
        ]
        out["backups"] = {
            "total": len(facts),
            "late": sorted(late, key=lambda b: b["last"] or now - timedelta(9999)),
        }
    except SourceUnavailable as exc:
        out["backups"] = {"unavailable": str(exc)}
    for name in ("drills", "deployments"):
        try:
            rows = list(fact_source(name)())
            out[name] = {"rows": sorted(rows, key=lambda f: f.finished_at, reverse=True)[:15]}
        except SourceUnavailable as exc:
            out[name] = {"unavailable": str(exc)}
    try:
        offsite = list(fact_source("offsite")())  # none: no second store configured
        out["offsite"] = {"fact": offsite[0] if offsite else None}
    except SourceUnavailable as exc:
        out["offsite"] = {"unavailable": str(exc)}
    return out


def _as_uuid(value: str) -> uuid.UUID | str:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return value


def dashboard_backup_sizes(*, now: datetime | None = None, days: int = 30) -> dict[str, Any]:
    """Verified backup sizes per day over `days` days, by kind, from the backup_sizes fact source:
    {"days": [date, ...], "series": [(kind label, [bytes per day])], "count", "total_bytes",
    "largest_bytes", "last_day_bytes"}."""
    now = now or timezone.now()
    first = (now - timedelta(days=days - 1)).date()
    connection.set_schema_to_public()
    try:
        since = datetime.combine(first, datetime.min.time(), tzinfo=now.tzinfo)
        rows = list(fact_source("backup_sizes")(since))
    except SourceUnavailable:
        rows = []
    dates = [first + timedelta(days=i) for i in range(days)]
    index = {d: i for i, d in enumerate(dates)}
    kinds = list(dict.fromkeys(r.kind for r in rows))  # "tenant", "platform", "database"
    series = {k: [0] * days for k in kinds}
    counts = {k: [0] * days for k in kinds}
    for r in rows:
        if r.day in index:
            series[r.kind][index[r.day]] = r.total_bytes
            counts[r.kind][index[r.day]] = r.count
    return {
        "days": dates,
        "series": [(k, series[k]) for k in kinds],
        "counts": {k: counts[k] for k in kinds},
        "count": sum(r.count for r in rows),
        "total_bytes": sum(r.total_bytes for r in rows),
        "largest_bytes": max((r.largest_bytes for r in rows), default=0),
        "last_day_bytes": sum(values[-1] for values in series.values()),
    }
