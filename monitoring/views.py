"""Machine endpoints, answered before tenant routing on every host but shops' (see monitoring.middleware)."""

import hmac
import json

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST

from core.clientip import address_in, client_ip
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


def metrics_authorized(request: HttpRequest) -> bool:
    """The bearer token when METRICS_TOKEN is set (no address fallback); else the address allow-list."""
    token = settings.METRICS_TOKEN
    if token:
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header.startswith("Bearer ") else ""
        return hmac.compare_digest(given.encode(), token.encode())
    return address_in(client_ip(request), settings.METRICS_ALLOWED_IPS, setting="METRICS_ALLOWED_IPS")


def metrics(request: HttpRequest) -> HttpResponse:
    if not metrics_authorized(request):
        message = (
            "Send `Authorization: Bearer <METRICS_TOKEN>`."
            if settings.METRICS_TOKEN
            else "Scrape from an address in METRICS_ALLOWED_IPS, or set METRICS_TOKEN and send it "
            "as a bearer token."
        )
        return HttpResponse(json.dumps({"error": message}), status=403, content_type="application/json")
    return HttpResponse(metrics_render(), content_type=CONTENT_TYPE_LATEST)
