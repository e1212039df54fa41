"""Placed before TenantRoutingMiddleware: answers /healthz on every host, /readyz and /metrics on
every host that is not a shop's (tenants.middleware.host_is_shop), and around every other request
keeps the log context and records request metrics.

On a shop's host /readyz and /metrics are ordinary paths of the shop, which has none: 404.
"""

import re
import time
import uuid

from django.core.signals import request_finished
from django.dispatch import receiver
from django_tenants.utils import get_public_schema_name

from monitoring import views
from monitoring.context import request_id_var, request_var
from monitoring.metrics import request_observe, tenant_labels

ENDPOINTS = {"/healthz": views.healthz, "/readyz": views.readyz, "/metrics": views.metrics}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def tenant_label(request) -> str:
    if not hasattr(request, "tenant"):
        return "_unrouted"  # unknown host, suspended shop, or refused host name
    tenant = request.tenant
    if tenant is None or tenant.schema_name == get_public_schema_name():
        return "_platform"  # the control plane's own host
    return tenant_labels.label(tenant.subdomain)


def _host_is_shop(request) -> bool:
    # Imported on use: the routing bench's "plain" stack runs this middleware without the tenants app.
    from tenants.middleware import host_is_shop

    return host_is_shop(request)


class MonitoringMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        endpoint = ENDPOINTS.get(request.path_info.rstrip("/"))
        if endpoint is views.healthz or (endpoint is not None and not _host_is_shop(request)):
            return endpoint(request)
        given = request.headers.get("X-Request-ID", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        request.request_id = request_id
        # Cleared on request_finished, not here: Django logs 4xx/5xx after the middleware returns.
        request_id_var.set(request_id)
        request_var.set(request)
        started = time.perf_counter()
        response = self.get_response(request)
        request_observe(
            tenant=tenant_label(request), status=response.status_code, seconds=time.perf_counter() - started
        )
        response["X-Request-ID"] = request_id
        return response


@receiver(request_finished)
def _forget_request(**kwargs) -> None:
    request_id_var.set("")
    request_var.set(None)
