"""One error shape for every API answer (RFC 9457 problem details, application/problem+json).

Every refusal, whether from a service (PlatformError), validation, authentication, a scope, a
rate limit, or Django itself (404, 405, 413, 415), leaves here with a `detail` that says what to
fix; validation errors list each field in `errors`.
"""

from typing import Any

from django.http import HttpRequest, JsonResponse

from api import errors as api_errors
from backups import errors as backup_errors
from core.errors import PlatformError
from deployments import errors as deploy_errors
from tenants import errors as tenant_errors
from tenants.domains.services import CheckTooSoon, DomainConflict
from webhooks.errors import WebhookError

CONTENT_TYPE = "application/problem+json"

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Server error",
    503: "Service unavailable",
}

# Most specific first: the first class an error is an instance of decides its status.
STATUS_OF: list[tuple[type[PlatformError], int, str]] = [
    (api_errors.ScopeMissing, 403, "scope-missing"),
    (api_errors.RateLimited, 429, "rate-limited"),
    (CheckTooSoon, 429, "check-too-soon"),
    (api_errors.IdempotencyConflict, 409, "idempotency-in-progress"),
    (api_errors.IdempotencyMismatch, 422, "idempotency-key-reused"),
    (DomainConflict, 409, "domain-in-use"),
    (tenant_errors.PlanLimitExceeded, 409, "plan-limit-exceeded"),
    (tenant_errors.TenantStateError, 409, "wrong-state"),
    (backup_errors.BackupStateError, 409, "wrong-state"),
    (deploy_errors.TargetLocked, 409, "target-locked"),
    (deploy_errors.TargetUnreachable, 503, "target-unreachable"),
    (backup_errors.StorageError, 503, "storage-unavailable"),
    (WebhookError, 422, "webhook-refused"),
]


def problem(
    request: HttpRequest | None,
    status: int,
    detail: str,
    *,
    slug: str = "",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JsonResponse:
    body = {
        "type": f"/api/problems/{slug}" if slug else "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": request.path if request is not None else None,
        **extra,
    }
    response = JsonResponse(body, status=status, content_type=CONTENT_TYPE)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def platform_problem(request: HttpRequest, exc: PlatformError) -> JsonResponse:
    status, slug = 422, "refused"
    for cls, code, name in STATUS_OF:
        if isinstance(exc, cls):
            status, slug = code, name
            break
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return problem(request, status, str(exc), slug=slug, headers=headers)


def _field(loc: list[Any]) -> tuple[str, str]:
    """ninja's error location -> (where, field): ["body", "payload", "subdomain"] -> (body, subdomain)."""
    parts = [str(p) for p in loc]
    where = parts[0] if parts else "body"
    rest = parts[1:]
    if where == "body" and rest and rest[0] == "payload":
        rest = rest[1:]
    return where, ".".join(rest) or where


def validation_problem(request: HttpRequest, errors: list[dict[str, Any]]) -> JsonResponse:
    items = []
    for err in errors:
        where, field = _field(list(err.get("loc", [])))
        message = str(err.get("msg", "is not valid"))
        items.append({"field": field, "location": where, "message": message})
    summary = "; ".join(f"{i['field']}: {i['message']}" for i in items[:5]) or "the request is not valid"
    return problem(
        request, 422, f"Fix these and send it again: {summary}.", slug="validation-error", errors=items
    )
