"""Host -> tenant resolution with two cache levels, so a warm request makes no extra query.

Level 1 is a dict in each process, trusted for TENANT_ROUTE_LOCAL_SECONDS; level 2 is the
shared cache (Redis), trusted until a change invalidates it. Unknown hosts are cached too, so
a scanner hammering random hosts does not reach the database on every repeat.
"""

import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from core.db import connection
from tenants.models import Domain


@dataclass(frozen=True)
class TenantRoute:
    """What a request needs to know about its tenant. Quacks like a tenant for django-tenants."""

    id: str
    schema_name: str
    subdomain: str
    name: str
    status: str
    host: str

    def get_tenant_type(self) -> None:
        return None


_MISSING = "missing"
_local: dict[str, tuple[float, TenantRoute | None]] = {}


def _cache_key(host: str) -> str:
    return f"tenant-route:{host}"


def _load_route(host: str) -> TenantRoute | None:
    connection.set_schema_to_public()
    row = (
        Domain.objects.filter(domain=host, status__in=Domain.ROUTABLE_STATUSES)
        .values_list(
            "tenant_id", "tenant__schema_name", "tenant__subdomain", "tenant__name", "tenant__status"
        )
        .first()
    )
    if row is None:
        return None
    tenant_id, schema_name, subdomain, name, status = row
    return TenantRoute(str(tenant_id), schema_name, subdomain, name, status, host)


def route_for_host(host: str) -> TenantRoute | None:
    now = time.monotonic()
    hit = _local.get(host)
    if hit is not None and hit[0] > now:
        return hit[1]
    shared = cache.get(_cache_key(host))
    if shared is None:
        route = _load_route(host)
        cache.set(_cache_key(host), route or _MISSING, settings.TENANT_ROUTE_CACHE_SECONDS)
    else:
        route = None if shared == _MISSING else shared
    if len(_local) > 10_000:
        _local.clear()
    _local[host] = (now + settings.TENANT_ROUTE_LOCAL_SECONDS, route)
    return route


def routes_forget(*hosts: str) -> None:
    """Invalidate routes after a tenant or domain change (other processes follow within seconds)."""
    for host in hosts:
        _local.pop(host, None)
    cache.delete_many([_cache_key(h) for h in hosts])


def tenant_routes_forget(tenant) -> None:
    routes_forget(*tenant.domains.values_list("domain", flat=True))
