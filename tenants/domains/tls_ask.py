"""The "ask" endpoint for edges that get certificates on demand (Caddy on_demand_tls, kamal-proxy).

GET /internal/tls/ask?domain=shop.example.com answers 200 only for a custom domain whose
ownership is verified (verified, certificate pending or active); anything else is 404, so an
attacker pointing random names at the edge cannot make it request certificates for them.

Only the edge may ask: the header X-Edge-Ask-Secret equal to EDGE_ASK_SECRET, or a client address
(core.clientip) in EDGE_ASK_ALLOWED_IPS or TRUSTED_PROXIES. Anyone else gets 403 before the name
is even read, so the endpoint cannot be used to learn which domains the platform serves.
"""

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseNotFound
from django.views.decorators.http import require_GET

from core.clientip import address_in, client_ip
from tenants.domains.services import domain_normalise
from tenants.errors import TenantValidationError
from tenants.models import Domain

ASK_STATUSES = (Domain.Status.VERIFIED, Domain.Status.CERTIFICATE_PENDING, Domain.Status.ACTIVE)
SECRET_HEADER = "X-Edge-Ask-Secret"


def edge_may_ask(request: HttpRequest) -> bool:
    secret = settings.EDGE_ASK_SECRET
    given = request.headers.get(SECRET_HEADER, "")
    if secret and given:
        return hmac.compare_digest(given.encode(), secret.encode())
    address = client_ip(request)
    return address_in(address, settings.EDGE_ASK_ALLOWED_IPS, setting="EDGE_ASK_ALLOWED_IPS") or address_in(
        address, settings.TRUSTED_PROXIES, setting="TRUSTED_PROXIES"
    )


@require_GET
def tls_ask(request: HttpRequest) -> HttpResponse:
    if not edge_may_ask(request):
        return HttpResponse(
            f"Only the edge may ask: send {SECRET_HEADER} (EDGE_ASK_SECRET) or call from an address in "
            "EDGE_ASK_ALLOWED_IPS.\n",
            status=403, content_type="text/plain",
        )
    raw = request.GET.get("domain", "")
    try:
        name = domain_normalise(raw)
    except TenantValidationError as exc:
        return HttpResponseBadRequest(f"{exc}\n", content_type="text/plain")
    if Domain.objects.filter(domain=name, kind=Domain.Kind.CUSTOM, status__in=ASK_STATUSES).exists():
        return HttpResponse("ok\n", content_type="text/plain")
    return HttpResponseNotFound(f"{name} is not a verified custom domain\n", content_type="text/plain")
