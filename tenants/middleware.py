"""Routes each request to its tenant's schema by host name, from cache when warm."""

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpResponse
from django.http.request import split_domain_port
from django.template.loader import render_to_string
from django_tenants.utils import get_public_schema_name

from core.db import connection
from tenants.domains.wellknown import wellknown_response
from tenants.models import Tenant
from tenants.routing import TenantRoute, route_for_host

# The control plane host's "tenant": the public schema. django-tenants' admin templates read
# request.tenant.schema_name on every admin page (its app_list.html), so it cannot be None.
PUBLIC_ROUTE = TenantRoute(
    id="", schema_name=get_public_schema_name(), subdomain="", name="Control plane",
    status=Tenant.Status.ACTIVE, host="",
)


def _page(template: str, status: int, **context) -> HttpResponse:
    return HttpResponse(render_to_string(template, context), status=status)


class TenantRoutingMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        connection.set_schema_to_public()
        answer = wellknown_response(request)
        if answer is not None:
            return answer
        try:
            host = request.get_host()
        except DisallowedHost:
            host = _routed_custom_host(request)
            if host is None:
                return _page("tenants/unknown_host.html", 400, host="this host")
        hostname = host.rsplit(":", 1)[0].lower().rstrip(".") if not host.startswith("[") else host
        if hostname == settings.PLATFORM_ADMIN_HOST:
            request.tenant = PUBLIC_ROUTE
            request.urlconf = settings.PUBLIC_SCHEMA_URLCONF
            return self.get_response(request)

        route = route_for_host(hostname)
        if route is None:
            return _page("tenants/unknown_host.html", 404, host=hostname)
        if route.status != Tenant.Status.ACTIVE:
            # 503 tells browsers and crawlers the shop is unavailable, not gone.
            response = _page("tenants/suspended.html", 503, route=route)
            response["Cache-Control"] = "no-store"
            return response
        connection.set_tenant(route)
        request.tenant = route
        request.urlconf = settings.ROOT_URLCONF
        return self.get_response(request)


def _routed_custom_host(request) -> str | None:
    """A host outside ALLOWED_HOSTS is still ours when it routes (an active custom domain)."""
    raw = request.META.get("HTTP_HOST", "")
    domain, _port = split_domain_port(raw)
    if not domain or route_for_host(domain.lower().rstrip(".")) is None:
        return None
    # The routing table vouches for this host; later get_host() calls (CSRF, redirects) agree.
    request.get_host = lambda: raw
    return raw


def host_is_shop(request) -> bool:
    """True when the request's Host belongs to a shop: any name under PLATFORM_BASE_DOMAIN but the
    admin host, or a routed custom domain. Machine endpoints (/metrics, /readyz) never answer there;
    they answer on the admin host and on internal names and addresses (Prometheus scrapes web:8000).
    """
    raw = request.META.get("HTTP_HOST", "") or request.META.get("SERVER_NAME", "")
    domain, _port = split_domain_port(raw)
    hostname = domain.lower().rstrip(".")
    if not hostname or hostname == settings.PLATFORM_ADMIN_HOST:
        return False
    base = settings.PLATFORM_BASE_DOMAIN
    if hostname == base or hostname.endswith(f".{base}"):
        return True
    return route_for_host(hostname) is not None
