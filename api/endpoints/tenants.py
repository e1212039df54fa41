"""/api/v1/tenants: create (idempotent), get, list, suspend, resume, change plan, deprovision."""

import base64
import binascii
import re

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import Header, Query, Router
from ninja.errors import ValidationError

from api import present
from api.apis import actor, staff
from api.limits import fingerprint, idempotent
from api.schemas import (
    Accepted,
    DeprovisionConfirmIn,
    DeprovisionIn,
    DeprovisionPlan,
    PlanIn,
    SuspendIn,
    TenantCreated,
    TenantCreateIn,
    TenantOut,
    TenantPage,
    responses,
)
from core.db import connection
from tenants import jobs as tenant_jobs
from tenants import services
from tenants.errors import TenantValidationError
from tenants.models import Tenant
from tenants.selectors import tenant_live_usage

router = Router(tags=["tenants"])
DEPROVISION_SALT = "api.deprovision"
DEPROVISION_SECONDS = 600
CURSOR_RE = re.compile(r"^[a-z0-9-]{1,63}$")


def tenant_for(subdomain: str) -> Tenant:
    connection.set_schema_to_public()
    return get_object_or_404(Tenant.objects.select_related("plan"), subdomain=subdomain.lower())


def _wants_async(prefer: str | None) -> bool:
    return "respond-async" in (prefer or "").lower()


@router.post("/tenants", response=responses({201: TenantCreated, 202: TenantCreated}),
             auth=staff("tenants:write"), url_name="tenant_create")
def tenant_create(
    request: HttpRequest,
    response: HttpResponse,
    payload: TenantCreateIn,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
    prefer: str | None = Header(None, alias="Prefer"),
):
    """Create a shop. Send an `Idempotency-Key` so a retried signup never makes two shops.

    Runs at once (201) unless `Prefer: respond-async` asks for a job (202; follow `status_url`).
    """
    run_async = _wants_async(prefer)
    who = actor(request)

    def run() -> tuple[int, dict]:
        fields = payload.dict()
        if run_async:
            tenant = services.tenant_request(actor=who, **fields)
            tenant_jobs.provision_tenant_job.delay(str(tenant.pk), *who.job_args)
            link = None
        else:
            result = services.tenant_provision(actor=who, **fields)
            tenant, link = result.tenant, result.owner_link
        body = {"tenant": present.tenant_out(tenant), "status_url": present.tenant_status_url(tenant)}
        return (202 if run_async else 201), {**body, "owner_set_password_link": link}

    fp = fingerprint("POST", request.path, [payload.dict(), run_async])
    status, body, replayed = idempotent(
        key=request.api_key, idempotency_key=idempotency_key, fp=fp, run=run  # type: ignore[attr-defined]
    )
    if replayed:
        response["Idempotent-Replayed"] = "true"
        # The set-password link is a credential: given once, never kept for replays.
        body = {**body, "owner_set_password_link": None}
    response["Location"] = body["status_url"]
    return status, body


@router.get("/tenants", response=responses({200: TenantPage}), auth=staff("tenants:read"),
            url_name="tenant_list")
def tenant_list(
    request: HttpRequest,
    status: Tenant.Status | None = Query(None),
    plan: str | None = Query(None, max_length=50),
    cursor: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=200),
):
    """Shops in subdomain order, `limit` at a time; pass `next_cursor` back as `cursor`."""
    connection.set_schema_to_public()
    rows = Tenant.objects.select_related("plan").order_by("subdomain")
    if status:
        rows = rows.filter(status=status)
    if plan:
        rows = rows.filter(plan__slug=plan)
    if cursor:
        rows = rows.filter(subdomain__gt=_cursor_decode(cursor))
    page = list(rows[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    next_cursor = _cursor_encode(page[-1].subdomain) if more and page else None
    return {"items": [present.tenant_out(t) for t in page], "next_cursor": next_cursor}


def _cursor_encode(subdomain: str) -> str:
    return base64.urlsafe_b64encode(subdomain.encode()).decode().rstrip("=")


def _cursor_decode(cursor: str) -> str:
    try:
        text = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
        if not CURSOR_RE.match(text):
            raise ValueError(text)
        return text
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationError(
            [{"loc": ["query", "cursor"], "msg": "not a cursor this API gave out; pass next_cursor back "
              "unchanged, or leave it out for the first page"}]
        ) from None


@router.get("/tenants/{subdomain}", response=responses({200: TenantOut}), auth=staff("tenants:read"),
            url_name="tenant_get")
def tenant_get(request: HttpRequest, subdomain: str):
    return present.tenant_out(tenant_for(subdomain))


@router.post("/tenants/{subdomain}/suspend", response=responses({200: TenantOut}),
             auth=staff("tenants:write"), url_name="tenant_suspend")
def tenant_suspend(request: HttpRequest, subdomain: str, payload: SuspendIn):
    tenant = services.tenant_suspend(
        tenant=tenant_for(subdomain), reason=payload.reason, actor=actor(request)
    )
    return present.tenant_out(tenant)


@router.post("/tenants/{subdomain}/resume", response=responses({200: TenantOut}),
             auth=staff("tenants:write"), url_name="tenant_resume")
def tenant_resume(request: HttpRequest, subdomain: str):
    return present.tenant_out(services.tenant_resume(tenant=tenant_for(subdomain), actor=actor(request)))


@router.post("/tenants/{subdomain}/plan", response=responses({200: TenantOut}),
             auth=staff("tenants:write"), url_name="tenant_change_plan")
def tenant_change_plan(request: HttpRequest, subdomain: str, payload: PlanIn):
    """Move the shop to another plan; refused (409) with what exceeds the new plan's limits."""
    tenant = services.tenant_change_plan(
        tenant=tenant_for(subdomain), plan=payload.plan, actor=actor(request)
    )
    return present.tenant_out(tenant)


@router.post("/tenants/{subdomain}/deprovision", response=responses({200: DeprovisionPlan}),
             auth=staff("tenants:write"), url_name="tenant_deprovision")
def tenant_deprovision(request: HttpRequest, subdomain: str, payload: DeprovisionIn):
    """Step 1 of 2: says what will be removed and gives a confirmation token (10 minutes)."""
    tenant = tenant_for(subdomain)
    if tenant.status not in (Tenant.Status.ACTIVE, Tenant.Status.SUSPENDED, Tenant.Status.FAILED):
        raise TenantValidationError(f"Shop {tenant.subdomain!r} is {tenant.status}; nothing to deprovision.")
    hosts = list(tenant.domains.values_list("domain", flat=True))
    lost = [f"routes for {', '.join(hosts) or 'no hosts'}"]
    if payload.drop_schema:
        usage = tenant_live_usage(tenant=tenant)
        lost.append(f"schema {tenant.schema_name} with {usage.products} products and the owner's "
                    f"account ({usage.schema_bytes // 1024} KB); a final backup is taken first")
    token = signing.TimestampSigner(salt=DEPROVISION_SALT).sign(f"{tenant.pk}:{int(payload.drop_schema)}")
    return {
        "subdomain": tenant.subdomain, "drop_schema": payload.drop_schema, "will_remove": lost,
        "confirmation_token": token, "expires_in_seconds": DEPROVISION_SECONDS,
        "confirm_url": reverse("api:tenant_deprovision_confirm", kwargs={"subdomain": tenant.subdomain},
                               urlconf=settings.PUBLIC_SCHEMA_URLCONF),
    }


@router.post("/tenants/{subdomain}/deprovision/confirm", response=responses({202: Accepted}),
             auth=staff("tenants:write"), url_name="tenant_deprovision_confirm")
def tenant_deprovision_confirm(request: HttpRequest, subdomain: str, payload: DeprovisionConfirmIn):
    """Step 2 of 2: the token from step 1 and the subdomain typed again; runs as a job."""
    tenant = tenant_for(subdomain)
    try:
        value = signing.TimestampSigner(salt=DEPROVISION_SALT).unsign(
            payload.confirmation_token, max_age=DEPROVISION_SECONDS
        )
    except signing.BadSignature:
        raise TenantValidationError(
            "The confirmation token is invalid or older than 10 minutes; ask for a new one (step 1)."
        ) from None
    tenant_id, _, drop = value.partition(":")
    if tenant_id != str(tenant.pk):
        raise TenantValidationError("This confirmation token was given for another shop.")
    if payload.confirm_subdomain.strip().lower() != tenant.subdomain:
        raise TenantValidationError(
            f"confirm_subdomain must be {tenant.subdomain!r} exactly; nothing was deprovisioned."
        )
    job = tenant_jobs.deprovision_tenant_job.delay(str(tenant.pk), drop == "1", *actor(request).job_args)
    return 202, {"status": "queued", "status_url": present.tenant_status_url(tenant),
                 "job_id": getattr(job, "id", None)}
