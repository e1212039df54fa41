"""Reads: which endpoints hear an event, and deliveries for the admin or an API view."""

from django.db.models import Q, QuerySet

from tenants.models import Tenant
from webhooks.models import Delivery, Endpoint


def endpoints_for(*, event_type: str, tenant: Tenant | None) -> QuerySet[Endpoint]:
    """Enabled endpoints that receive `event_type` for `tenant`: every platform endpoint, plus the
    shop's own ones when the event belongs to a shop. A shop's endpoint never hears another shop."""
    owners = Q(tenant__isnull=True) | Q(tenant=tenant) if tenant is not None else Q(tenant__isnull=True)
    return Endpoint.objects.filter(owners, enabled=True).filter(
        Q(events=[]) | Q(events__contains=[event_type])
    )


def deliveries_for(
    *,
    endpoint: Endpoint | None = None,
    tenant: Tenant | None = None,
    status: str | None = None,
    event_type: str | None = None,
) -> QuerySet[Delivery]:
    """Deliveries, newest first: of one endpoint, or of every endpoint a shop owns (`tenant`)."""
    rows = Delivery.objects.select_related("message", "endpoint").order_by("-created_at", "-id")
    if endpoint is not None:
        rows = rows.filter(endpoint=endpoint)
    if tenant is not None:
        rows = rows.filter(endpoint__tenant=tenant)
    if status:
        rows = rows.filter(status=status)
    if event_type:
        rows = rows.filter(event_type=event_type)
    return rows
