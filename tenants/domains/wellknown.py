"""ACME HTTP-01 answers under /.well-known/acme-challenge/ for any host the edge sends us.

They must be served before a domain routes to its shop (that is their point), so the routing
middleware hands this path here first. Nothing else is reachable this way. (Ownership tokens
at /.well-known/platform-verify/ are served by the tenant's own server, never by us.)
"""

from django.http import HttpResponse, HttpResponseNotFound
from django.http.request import split_domain_port

from tenants.models import AcmeChallenge

ACME_PREFIX = "/.well-known/acme-challenge/"


def wellknown_response(request) -> HttpResponse | None:
    """The response for a well-known path, or None when the path is not one of ours."""
    path = request.path_info
    if not path.startswith(ACME_PREFIX) or request.method not in ("GET", "HEAD"):
        return None
    host, _port = split_domain_port(request.META.get("HTTP_HOST", ""))
    token = path[len(ACME_PREFIX):]
    answer = (
        AcmeChallenge.objects.filter(token=token, domain=host.lower().rstrip("."))
        .values_list("key_authorization", flat=True)
        .first()
    )
    if not token or answer is None:
        return HttpResponseNotFound("not found\n", content_type="text/plain")
    return HttpResponse(answer, content_type="text/plain")
