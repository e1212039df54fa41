"""The "ask" endpoint for edges that get certificates on demand (Caddy on_demand_tls, kamal-proxy).

GET /internal/tls/ask?domain=shop.example.com answers 200 only for a custom domain whose
ownership is verified (verified, certificate pending or active); anything else is 404, so an
attacker pointing random names at the edge cannot make it request certificates for them.
"""

from django.http import HttpResponse, HttpResponseBadRequest, HttpResponseNotFound
from django.views.decorators.http import require_GET

from tenants.domains.services import domain_normalise
from tenants.errors import TenantValidationError
from tenants.models import Domain

ASK_STATUSES = (Domain.Status.VERIFIED, Domain.Status.CERTIFICATE_PENDING, Domain.Status.ACTIVE)


@require_GET
def tls_ask(request):
    raw = request.GET.get("domain", "")
    try:
        name = domain_normalise(raw)
    except TenantValidationError as exc:
        return HttpResponseBadRequest(f"{exc}\n", content_type="text/plain")
    if Domain.objects.filter(domain=name, kind=Domain.Kind.CUSTOM, status__in=ASK_STATUSES).exists():
        return HttpResponse("ok\n", content_type="text/plain")
    return HttpResponseNotFound(f"{name} is not a verified custom domain\n", content_type="text/plain")
