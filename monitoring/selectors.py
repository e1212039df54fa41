"""Read-side queries for monitoring: probe targets, uptime, latest probe per host."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Avg, Count, Q
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from monitoring.models import ProbeResult
from tenants.models import Domain, Tenant


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


def uptime_percent(*, since: datetime, tenant_ids: list | None = None) -> dict[str, float]:
    """Share of successful probes per tenant since `since`, in percent (tenants never probed are absent)."""
    rows = ProbeResult.objects.filter(checked_at__gte=since)
    if tenant_ids is not None:
        rows = rows.filter(tenant_id__in=tenant_ids)
    stats = rows.values("tenant_id").annotate(total=Count("id"), up=Count("id", filter=Q(ok=True))).order_by()
    return {str(r["tenant_id"]): round(100.0 * r["up"] / r["total"], 2) for r in stats}


def uptime_windows(*, tenant_ids: list | None = None, now: datetime | None = None) -> dict[str, dict]:
    now = now or timezone.now()
    day = uptime_percent(since=now - timedelta(hours=24), tenant_ids=tenant_ids)
    month = uptime_percent(since=now - timedelta(days=30), tenant_ids=tenant_ids)
    return {t: {"24h": day.get(t), "30d": month[t]} for t in month}


def latest_probes(*, within: timedelta = timedelta(days=1)) -> list[dict]:
    """The most recent probe of each host seen within `within` (one query), as dicts."""
    since = timezone.now() - within
    return list(
        ProbeResult.objects.filter(checked_at__gte=since)
        .order_by("host", "-checked_at", "-id")
        .distinct("host")
        .values(
            "host",
            "tenant_id",
            "tenant__subdomain",
            "checked_at",
            "ok",
            "status_code",
            "latency_ms",
            "error",
            "tls_expires_at",
        )
    )


def recent_failures(*, hosts_window: int) -> dict[str, tuple[str, int, str]]:
    """For each host: (tenant_id, consecutive failed probes up to `hosts_window`, last error)."""
    sql = """
        SELECT host, tenant_id, ok, error FROM (
            SELECT host, tenant_id, ok, error,
                   row_number() OVER (PARTITION BY host ORDER BY checked_at DESC, id DESC) AS n
            FROM monitoring_proberesult WHERE checked_at >= %s
        ) recent WHERE n <= %s ORDER BY host, n
    """
    since = timezone.now() - timedelta(days=1)
    streaks: dict[str, tuple[str, int, str]] = {}
    broken: set[str] = set()
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        cursor.execute(sql, [since, hosts_window])
        for host, tenant_id, ok, error in cursor.fetchall():
            if host in broken:
                continue
            tenant, count, last_error = streaks.get(host, (str(tenant_id), 0, error))
            if ok:
                broken.add(host)
            else:
                count += 1
            streaks[host] = (tenant, count, last_error)
    return streaks


def uptime_hourly(
    *, tenant_id, hours: int = 24, now: datetime | None = None
) -> list[tuple[datetime, int, int]]:
    """(hour, probes, successes) for the last `hours` hours, oldest first, for the admin's charts."""
    now = now or timezone.now()
    rows = (
        ProbeResult.objects.filter(tenant_id=tenant_id, checked_at__gte=now - timedelta(hours=hours))
        .annotate(hour=TruncHour("checked_at"))
        .values("hour")
        .annotate(total=Count("id"), up=Count("id", filter=Q(ok=True)))
        .order_by("hour")
    )
    return [(r["hour"], r["total"], r["up"]) for r in rows]


def _hourly_by_host(hosts: list[str], *, since: datetime, trunc) -> dict[str, dict]:
    rows = (
        ProbeResult.objects.filter(host__in=hosts, checked_at__gte=since)
        .annotate(slot=trunc("checked_at"))
        .values("host", "slot")
        .annotate(total=Count("id"), up=Count("id", filter=Q(ok=True)), latency=Avg("latency_ms"))
        .order_by()
    )
    out: dict[str, dict] = {}
    for r in rows:
        out.setdefault(r["host"], {})[r["slot"]] = (r["total"], r["up"], r["latency"])
    return out


def dashboard_shops(*, now: datetime | None = None, limit: int = 30) -> list[dict]:
    """The shops to show on the dashboard, worst first, with hourly (24 h) and daily (30 d) series."""
    now = now or timezone.now()
    latest = sorted(latest_probes(), key=lambda p: (p["ok"], -(p["latency_ms"] or 0)))[:limit]
    hosts = [p["host"] for p in latest]
    hour0 = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    day0 = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=29)
    hourly = _hourly_by_host(hosts, since=hour0, trunc=TruncHour)
    daily = _hourly_by_host(hosts, since=day0, trunc=TruncDay)
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
