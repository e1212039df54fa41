"""Answers under /.well-known/ for any host the edge sends us, routed or not.

ACME HTTP-01 answers and the platform's HTTP verification token must be served before a domain
routes to its shop (that is the point of them), so the routing middleware hands these paths
here first. Nothing else is reachable this way.
"""

from django.http import HttpResponse, HttpResponseNotFound
from django.http.request import split_domain_port

from tenants.models import AcmeChallenge, Domain

ACME_PREFIX = "/.well-known/acme-challenge/"
VERIFY_PREFIX = "/.well-known/platform-verify/"


def wellknown_response(request) -> HttpResponse | None:
    """The response for a well-known path, or None when the path is not one of ours."""
    path = request.path_info
    if not path.startswith((ACME_PREFIX, VERIFY_PREFIX)) or request.method not in ("GET", "HEAD"):
        return None
    host, _port = split_domain_port(request.META.get("HTTP_HOST", ""))
    host = host.lower().rstrip(".")
    if path.startswith(ACME_PREFIX):
        token = path[len(ACME_PREFIX):]
        answer = (
            AcmeChallenge.objects.filter(token=token, domain=host)
            .values_list("key_authorization", flat=True)
            .first()
        )
    else:
        token = path[len(VERIFY_PREFIX):]
        answer = (
            Domain.objects.filter(domain=host, verification_token=token, kind=Domain.Kind.CUSTOM)
            .exclude(verification_token="")
            .values_list("verification_token", flat=True)
            .first()
        )
    if not token or answer is None:
        return HttpResponseNotFound("not found\n", content_type="text/plain")
    return HttpResponse(answer, content_type="text/plain")
