"""Webhook endpoints registered per API key: staff keys (/api/v1/webhooks) and shop keys
(/api/shop/v1/webhooks, that shop's events only). A key sees and changes only the endpoints it
made; anyone else's is a 404. The services are webhooks.services, as in the admin."""

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Query, Router

from api.apis import actor, shop, staff
from api.endpoints.domains import as_shop_key
from api.schemas import (
    WebhookCreated,
    WebhookDeliveryOut,
    WebhookDeliveryPage,
    WebhookIn,
    WebhookList,
    WebhookOut,
    WebhookPatch,
    WebhookSecret,
    WebhookStaffIn,
    responses,
)
from tenants.models import Tenant
from webhooks import services
from webhooks.errors import WebhookError
from webhooks.models import Delivery, Endpoint
from webhooks.selectors import deliveries_for

staff_router = Router(tags=["webhooks"])
shop_router = Router(tags=["webhooks"])


def endpoint_out(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "id": endpoint.pk, "url": endpoint.url, "events": endpoint.events,
        "description": endpoint.description,
        "tenant": endpoint.tenant.subdomain if endpoint.tenant else None,
        "enabled": endpoint.enabled, "disabled_reason": endpoint.disabled_reason,
        "consecutive_failures": endpoint.consecutive_failures,
        "last_success_at": endpoint.last_success_at, "created_at": endpoint.created_at,
    }


def delivery_out(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.pk, "message_id": delivery.message_id, "event_type": delivery.event_type,
        "status": delivery.status, "attempts": delivery.attempts, "response_code": delivery.response_code,
        "last_error": delivery.last_error, "next_attempt_at": delivery.next_attempt_at,
        "created_at": delivery.created_at, "delivered_at": delivery.delivered_at,
        "resend_of": delivery.resend_of_id,
    }


def _mine(request: HttpRequest) -> QuerySet[Endpoint]:
    """The calling key's own endpoints; a shop key's are also pinned to its shop (twice sure)."""
    key = request.api_key  # type: ignore[attr-defined]
    rows = Endpoint.objects.filter(api_key=key).select_related("tenant")
    return rows.filter(tenant_id=key.tenant_id) if key.tenant_id else rows


def _owned(request: HttpRequest, webhook_id: int) -> Endpoint:
    # Anyone else's endpoint is a 404, never a 403 that confirms it exists.
    return get_object_or_404(_mine(request), pk=webhook_id)


def _list(request: HttpRequest) -> dict:
    rows = _mine(request)
    return {"items": [endpoint_out(e) for e in rows.order_by("-created_at", "-id")[:500]]}


def _shop_named(subdomain: str) -> Tenant:
    tenant = Tenant.objects.filter(subdomain=subdomain.lower()).first()
    if tenant is None:
        raise WebhookError(f"No shop {subdomain!r}: give an existing shop's subdomain as `tenant`, "
                           "or leave it out for a platform endpoint (every shop's events).")
    return tenant


def _create(request: HttpRequest, payload: WebhookIn, tenant: Tenant | None) -> tuple[int, dict]:
    made = services.endpoint_create(
        url=payload.url, events=payload.events, description=payload.description, tenant=tenant,
        actor=actor(request), api_key=request.api_key,  # type: ignore[attr-defined]
    )
    return 201, {**endpoint_out(made.endpoint), "secret": made.secret}


def _patch(request: HttpRequest, webhook_id: int, payload: WebhookPatch) -> dict:
    endpoint = _owned(request, webhook_id)
    who = actor(request)
    endpoint = services.endpoint_update(endpoint=endpoint, actor=who, url=payload.url,
                                        events=payload.events, description=payload.description)
    if payload.enabled is True:
        services.endpoint_enable(endpoint=endpoint, actor=who)
    elif payload.enabled is False:
        services.endpoint_disable(endpoint=endpoint, actor=who,
                                  reason=f"disabled through the API by {who.name}")
    return endpoint_out(_owned(request, webhook_id))


def _delete(request: HttpRequest, webhook_id: int) -> tuple[int, None]:
    services.endpoint_delete(endpoint=_owned(request, webhook_id), actor=actor(request))
    return 204, None


def _rotate(request: HttpRequest, webhook_id: int) -> dict:
    endpoint = _owned(request, webhook_id)
    secret = services.endpoint_rotate_secret(endpoint=endpoint, actor=actor(request))
    endpoint.refresh_from_db(fields=["previous_secret_expires_at"])
    return {"secret": secret, "old_secret_signs_until": endpoint.previous_secret_expires_at}


def _deliveries(request: HttpRequest, webhook_id: int, status: str | None, cursor: int | None,
                limit: int) -> dict:
    rows = deliveries_for(endpoint=_owned(request, webhook_id), status=status).order_by("-id")
    if cursor:
        rows = rows.filter(pk__lt=cursor)
    page = list(rows[: limit + 1])
    more, page = len(page) > limit, page[:limit]
    return {"items": [delivery_out(d) for d in page], "next_cursor": page[-1].pk if more and page else None}


def _resend(request: HttpRequest, webhook_id: int, delivery_id: int) -> tuple[int, dict]:
    delivery = get_object_or_404(Delivery, pk=delivery_id, endpoint=_owned(request, webhook_id))
    return 202, delivery_out(services.delivery_resend(delivery=delivery, actor=actor(request)))


STATUS = Query(None, description="pending, succeeded or failed", pattern="^(pending|succeeded|failed)$")
CURSOR = Query(None, ge=1, description="next_cursor from the previous page")
LIMIT = Query(50, ge=1, le=200)
ONE = "/webhooks/{webhook_id}"

# --- staff keys --------------------------------------------------------------------------------


@staff_router.get("/webhooks", response=responses({200: WebhookList}), auth=staff("webhooks:read"),
                  url_name="webhook_list")
def staff_webhook_list(request: HttpRequest):
    """This key's endpoints (another key's are never listed)."""
    return _list(request)


@staff_router.post("/webhooks", response=responses({201: WebhookCreated}), auth=staff("webhooks:write"),
                   url_name="webhook_create")
def staff_webhook_create(request: HttpRequest, payload: WebhookStaffIn):
    """Register an endpoint; the answer holds its signing secret, shown this once."""
    return _create(request, payload, _shop_named(payload.tenant) if payload.tenant else None)


@staff_router.get(ONE, response=responses({200: WebhookOut}), auth=staff("webhooks:read"),
                  url_name="webhook_get")
def staff_webhook_get(request: HttpRequest, webhook_id: int):
    return endpoint_out(_owned(request, webhook_id))


@staff_router.patch(ONE, response=responses({200: WebhookOut}), auth=staff("webhooks:write"),
                    url_name="webhook_update")
def staff_webhook_update(request: HttpRequest, webhook_id: int, payload: WebhookPatch):
    """Change the URL, events or description; `enabled` turns sending off or back on."""
    return _patch(request, webhook_id, payload)


@staff_router.delete(ONE, response=responses({204: None}), auth=staff("webhooks:write"),
                     url_name="webhook_delete")
def staff_webhook_delete(request: HttpRequest, webhook_id: int):
    return _delete(request, webhook_id)


@staff_router.post(ONE + "/rotate-secret", response=responses({200: WebhookSecret}),
                   auth=staff("webhooks:write"), url_name="webhook_rotate_secret")
def staff_webhook_rotate(request: HttpRequest, webhook_id: int):
    """A new secret, shown once; the old one also signs until `old_secret_signs_until`."""
    return _rotate(request, webhook_id)


@staff_router.get(ONE + "/deliveries", response=responses({200: WebhookDeliveryPage}),
                  auth=staff("webhooks:read"), url_name="webhook_deliveries")
def staff_webhook_deliveries(request: HttpRequest, webhook_id: int, status: str | None = STATUS,
                             cursor: int | None = CURSOR, limit: int = LIMIT):
    """Deliveries to this endpoint, newest first."""
    return _deliveries(request, webhook_id, status, cursor, limit)


@staff_router.post(ONE + "/deliveries/{delivery_id}/resend", response=responses({202: WebhookDeliveryOut}),
                   auth=staff("webhooks:write"), url_name="webhook_delivery_resend")
def staff_webhook_resend(request: HttpRequest, webhook_id: int, delivery_id: int):
    """Send a delivery's message again (same webhook-id), as a new delivery."""
    return _resend(request, webhook_id, delivery_id)


# --- shop keys: their own shop's events, on its own host -----------------------------------------


@shop_router.get("/webhooks", response=responses({200: WebhookList}), auth=shop("webhooks:read"),
                 url_name="shop_webhook_list")
def shop_webhook_list(request: HttpRequest):
    return as_shop_key(request, lambda _shop: _list(request))


@shop_router.post("/webhooks", response=responses({201: WebhookCreated}), auth=shop("webhooks:write"),
                  url_name="shop_webhook_create")
def shop_webhook_create(request: HttpRequest, payload: WebhookIn):
    """Register an endpoint for this shop's events; its signing secret is shown this once."""
    return as_shop_key(request, lambda own: _create(request, payload, own))


@shop_router.get(ONE, response=responses({200: WebhookOut}), auth=shop("webhooks:read"),
                 url_name="shop_webhook_get")
def shop_webhook_get(request: HttpRequest, webhook_id: int):
    return as_shop_key(request, lambda _shop: endpoint_out(_owned(request, webhook_id)))


@shop_router.patch(ONE, response=responses({200: WebhookOut}), auth=shop("webhooks:write"),
                   url_name="shop_webhook_update")
def shop_webhook_update(request: HttpRequest, webhook_id: int, payload: WebhookPatch):
    return as_shop_key(request, lambda _shop: _patch(request, webhook_id, payload))


@shop_router.delete(ONE, response=responses({204: None}), auth=shop("webhooks:write"),
                    url_name="shop_webhook_delete")
def shop_webhook_delete(request: HttpRequest, webhook_id: int):
    return as_shop_key(request, lambda _shop: _delete(request, webhook_id))


@shop_router.post(ONE + "/rotate-secret", response=responses({200: WebhookSecret}),
                  auth=shop("webhooks:write"), url_name="shop_webhook_rotate_secret")
def shop_webhook_rotate(request: HttpRequest, webhook_id: int):
    return as_shop_key(request, lambda _shop: _rotate(request, webhook_id))


@shop_router.get(ONE + "/deliveries", response=responses({200: WebhookDeliveryPage}),
                 auth=shop("webhooks:read"), url_name="shop_webhook_deliveries")
def shop_webhook_deliveries(request: HttpRequest, webhook_id: int, status: str | None = STATUS,
                            cursor: int | None = CURSOR, limit: int = LIMIT):
    return as_shop_key(request, lambda _shop: _deliveries(request, webhook_id, status, cursor, limit))


@shop_router.post(ONE + "/deliveries/{delivery_id}/resend", response=responses({202: WebhookDeliveryOut}),
                  auth=shop("webhooks:write"), url_name="shop_webhook_delivery_resend")
def shop_webhook_resend(request: HttpRequest, webhook_id: int, delivery_id: int):
    return as_shop_key(request, lambda _shop: _resend(request, webhook_id, delivery_id))
