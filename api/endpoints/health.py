"""A shop's health and usage: usage against its plan, uptime, certificate expiry."""

from django.http import HttpRequest
from django.utils import timezone
from ninja import Router

from api.apis import shop, staff
from api.endpoints.domains import as_shop_key
from api.endpoints.tenants import tenant_for
from api.schemas import HealthOut, responses
from monitoring.models import ProbeResult
from monitoring.selectors import uptime_windows
from tenants.models import Certificate, Tenant
from tenants.selectors import tenant_live_usage
from tenants.services import plan_limit_violations

staff_router = Router(tags=["health"])
shop_router = Router(tags=["health"])


def usage_of(tenant: Tenant) -> dict:
    usage, plan = tenant_live_usage(tenant=tenant), tenant.plan
    return {
        "plan": plan.slug, "products": usage.products, "max_products": plan.max_products,
        "custom_domains": usage.custom_domains, "max_custom_domains": plan.max_custom_domains,
        "storage_bytes": usage.schema_bytes, "max_storage_bytes": plan.max_storage_mb * 1024 * 1024,
        "over_limit": plan_limit_violations(tenant=tenant, plan=plan),
    }


def health_of(tenant: Tenant) -> dict:
    now = timezone.now()
    uptime = uptime_windows(tenant_ids=[tenant.pk], now=now).get(str(tenant.pk), {})
    last = ProbeResult.objects.filter(tenant=tenant).order_by("-checked_at").first()
    certs = Certificate.objects.filter(domain__tenant=tenant).select_related("domain")
    certs = certs.order_by("domain__domain")
    return {
        "subdomain": tenant.subdomain, "status": tenant.status, "usage": usage_of(tenant),
        "uptime_percent_24h": uptime.get("24h"), "uptime_percent_30d": uptime.get("30d"),
        "last_probe_ok": last.ok if last else None, "last_probe_at": last.checked_at if last else None,
        "certificates": [
            {"domain": c.domain.domain, "status": c.status,
             "not_after": c.not_after.isoformat() if c.not_after else None,
             "days_left": round((c.not_after - now).total_seconds() / 86400, 1) if c.not_after else None}
            for c in certs
        ],
    }


@staff_router.get("/tenants/{subdomain}/health", response=responses({200: HealthOut}),
                  auth=staff("tenants:read"), url_name="tenant_health")
def staff_health(request: HttpRequest, subdomain: str):
    """Usage against the plan, uptime (24 h, 30 days), the last probe, certificate expiry."""
    return health_of(tenant_for(subdomain))


@shop_router.get("/usage", response=responses({200: HealthOut}), auth=shop("domains:read"),
                 url_name="shop_usage")
def shop_usage(request: HttpRequest):
    """This shop's usage against its plan, uptime and certificate expiry."""
    return as_shop_key(request, health_of)
