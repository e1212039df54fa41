"""Machine endpoints, answered on every host before tenant routing (see monitoring.middleware)."""

import hmac
import ipaddress
import json

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST

from monitoring.health import readiness_checks
from monitoring.metrics import metrics_render


def healthz(request: HttpRequest) -> HttpResponse:
    # Liveness: the process answers. No database, no Redis, on purpose.
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> HttpResponse:
    checks = readiness_checks()
    ok = all(c.ok for c in checks)
    # Error details name hosts and databases: only for the callers allowed to scrape /metrics.
    detailed = metrics_authorized(request)
    body = {
        "status": "ok" if ok else "fail",
        "checks": {
            c.name: c.as_dict() if detailed else {"ok": c.ok, "detail": "ok" if c.ok else "failed"}
            for c in checks
        },
    }
    response = JsonResponse(body, status=200 if ok else 503)
    response["Cache-Control"] = "no-store"
    return response


def _client_allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in settings.METRICS_ALLOWED_IPS)


def metrics_authorized(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header[7:].strip().encode(), token.encode())
    return _client_allowed(request.META.get("REMOTE_ADDR", ""))


def metrics(request: HttpRequest) -> HttpResponse:
    if not metrics_authorized(request):
        message = (
            "Send `Authorization: Bearer <METRICS_TOKEN>` or scrape from an address in METRICS_ALLOWED_IPS."
        )
        return HttpResponse(json.dumps({"error": message}), status=403, content_type="application/json")
    return HttpResponse(metrics_render(), content_type=CONTENT_TYPE_LATEST)
