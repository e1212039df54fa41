"""Custom domains, for staff keys (any shop, /api/v1/tenants/{subdomain}/domains) and for shop keys
(their own shop, /api/shop/v1/domains). The same services, rules and messages as the owner's
Domains page (tenants.domains.services)."""

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Router

from api import present
from api.apis import actor, shop, staff
from api.endpoints.tenants import tenant_for
from api.schemas import Accepted, DomainIn, DomainList, DomainOut, responses
from core.db import connection
from tenants.domains import services as domain_services
from tenants.models import Certificate, Domain, Tenant

staff_router = Router(tags=["domains"])
shop_router = Router(tags=["domains"])


def _public(tenant_id: str) -> Tenant:
    connection.set_schema_to_public()
    return Tenant.objects.select_related("plan").get(pk=tenant_id)


def _domain(tenant: Tenant, name: str) -> Domain:
    # Scoped to this shop: another shop's domain is a 404 here, never a 403 that confirms it.
    return get_object_or_404(
        Domain.objects.select_related("tenant"), tenant=tenant, domain=name.lower().rstrip(".")
    )


def _list(tenant: Tenant) -> dict:
    rows = list(Domain.objects.filter(tenant=tenant).select_related("tenant").order_by("kind", "domain"))
    certs = {c.domain_id: c for c in Certificate.objects.filter(domain__in=rows)}
    return {
        "items": [present.domain_out(d, certs.get(d.pk)) for d in rows],
        "plan_allows": tenant.plan.max_custom_domains,
        "used": domain_services.custom_domain_count(tenant),
    }


def _add(request: HttpRequest, tenant: Tenant, payload: DomainIn) -> tuple[int, dict]:
    domain = domain_services.domain_add(tenant=tenant, domain=payload.domain, actor=actor(request))
    return 201, present.domain_out(domain)


def _check(request: HttpRequest, tenant: Tenant, name: str, status_url: str) -> tuple[int, dict]:
    domain = _domain(tenant, name)
    if domain.kind != Domain.Kind.CUSTOM:
        return 202, {"status": "nothing to check", "status_url": status_url}
    domain_services.domain_check_request(domain=domain, actor=actor(request))
    return 202, {"status": "queued", "status_url": status_url}


def _primary(request: HttpRequest, tenant: Tenant, name: str) -> dict:
    domain = domain_services.domain_make_primary(domain=_domain(tenant, name), actor=actor(request))
    return present.domain_out(domain)


def _remove(request: HttpRequest, tenant: Tenant, name: str) -> tuple[int, None]:
    domain_services.domain_remove(domain=_domain(tenant, name), actor=actor(request))
    return 204, None


# --- staff keys: any shop ------------------------------------------------------------------------

BASE = "/tenants/{subdomain}/domains"


@staff_router.get(BASE, response=responses({200: DomainList}), auth=staff("domains:read"),
                  url_name="domain_list")
def staff_domain_list(request: HttpRequest, subdomain: str):
    return _list(tenant_for(subdomain))


@staff_router.post(BASE, response=responses({201: DomainOut}), auth=staff("domains:write"),
                   url_name="domain_add")
def staff_domain_add(request: HttpRequest, subdomain: str, payload: DomainIn):
    """Claim a custom domain; the answer lists the DNS records to set."""
    return _add(request, tenant_for(subdomain), payload)


@staff_router.get(BASE + "/{domain}", response=responses({200: DomainOut}), auth=staff("domains:read"),
                  url_name="domain_get")
def staff_domain_get(request: HttpRequest, subdomain: str, domain: str):
    """Status, the exact DNS records to set (and what the last check saw), certificate state."""
    return present.domain_out(_domain(tenant_for(subdomain), domain))


@staff_router.post(BASE + "/{domain}/check", response=responses({202: Accepted}),
                   auth=staff("domains:write"), url_name="domain_check")
def staff_domain_check(request: HttpRequest, subdomain: str, domain: str):
    """Queue a check now (rate-limited per domain and per shop: 429 with Retry-After)."""
    return _check(request, tenant_for(subdomain), domain, request.path.rsplit("/check", 1)[0])


@staff_router.post(BASE + "/{domain}/primary", response=responses({200: DomainOut}),
                   auth=staff("domains:write"), url_name="domain_make_primary")
def staff_domain_primary(request: HttpRequest, subdomain: str, domain: str):
    return _primary(request, tenant_for(subdomain), domain)


@staff_router.delete(BASE + "/{domain}", response=responses({204: None}), auth=staff("domains:write"),
                     url_name="domain_remove")
def staff_domain_remove(request: HttpRequest, subdomain: str, domain: str):
    return _remove(request, tenant_for(subdomain), domain)


# --- shop keys: their own shop, on its own host ---------------------------------------------------


def _own(request: HttpRequest) -> Tenant:
    return _public(request.api_key.tenant_id)  # type: ignore[attr-defined]


def as_shop_key(request: HttpRequest, work: Callable[[Tenant], Any]) -> Any:
    """A shop key's call: ``work`` gets the key's own shop, read with the shared tables from the
    public schema; the connection goes back to the shop's schema afterwards, whatever happened."""
    try:
        return work(_own(request))
    finally:
        connection.set_tenant(request.tenant)  # type: ignore[attr-defined]


@shop_router.get("/domains", response=responses({200: DomainList}), auth=shop("domains:read"),
                 url_name="shop_domain_list")
def shop_domain_list(request: HttpRequest):
    return as_shop_key(request, _list)


@shop_router.post("/domains", response=responses({201: DomainOut}), auth=shop("domains:write"),
                  url_name="shop_domain_add")
def shop_domain_add(request: HttpRequest, payload: DomainIn):
    return as_shop_key(request, lambda own: _add(request, own, payload))


@shop_router.get("/domains/{domain}", response=responses({200: DomainOut}), auth=shop("domains:read"),
                 url_name="shop_domain_get")
def shop_domain_get(request: HttpRequest, domain: str):
    return as_shop_key(request, lambda own: present.domain_out(_domain(own, domain)))


@shop_router.post("/domains/{domain}/check", response=responses({202: Accepted}),
                  auth=shop("domains:write"), url_name="shop_domain_check")
def shop_domain_check(request: HttpRequest, domain: str):
    return as_shop_key(request, lambda own: _check(request, own, domain, request.path.rsplit("/check", 1)[0]))


@shop_router.post("/domains/{domain}/primary", response=responses({200: DomainOut}),
                  auth=shop("domains:write"), url_name="shop_domain_make_primary")
def shop_domain_primary(request: HttpRequest, domain: str):
    return as_shop_key(request, lambda own: _primary(request, own, domain))


@shop_router.delete("/domains/{domain}", response=responses({204: None}), auth=shop("domains:write"),
                    url_name="shop_domain_remove")
def shop_domain_remove(request: HttpRequest, domain: str):
    return as_shop_key(request, lambda own: _remove(request, own, domain))
