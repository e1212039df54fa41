"""Webhook endpoints (platform-wide or one shop's), the messages sent to them, every attempt."""

from django.db import models
from django.utils import timezone

from core.models import AuditEvent
from tenants.models import Tenant


class Endpoint(models.Model):
    """Where events are POSTed. No tenant: the platform's, every event; a tenant: that shop's only."""

    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="webhook_endpoints",
        help_text="Empty: a platform endpoint (every event). A shop: only that shop's events.",
    )
    # The API key that registered it (through the API); it alone sees and changes it there. A key
    # is revoked, not deleted; should one go (its shop deleted), its endpoints go too, rather than
    # becoming ownerless platform endpoints that hear every event.
    api_key = models.ForeignKey(
        "api.APIKey", null=True, blank=True, on_delete=models.CASCADE, related_name="webhook_endpoints",
        editable=False, help_text="The API key that registered it; empty when staff made it in the admin.",
    )
    url = models.CharField(max_length=1000, help_text="http(s) URL that receives the POSTs.")
    description = models.CharField(max_length=200, blank=True)
    # Event types (webhooks.events.EVENT_TYPES); empty means every type.
    events = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    # whsec_... encrypted with core.crypto; shown once at creation or rotation, never again.
    secret_encrypted = models.TextField(editable=False)
    # After a rotation the old secret still signs (a second signature) until this time.
    previous_secret_encrypted = models.TextField(blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.CharField(max_length=250, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    # Failed attempts in a row (any delivery) and since when; a success resets both.
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    last_success_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "webhook endpoint"

    def __str__(self) -> str:
        owner = self.tenant.subdomain if self.tenant_id and self.tenant else "platform"
        return f"{self.url} ({owner})"

    def wants(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


class Message(models.Model):
    """One event, as sent: its id is the webhook-id header (the same on every retry and re-send)."""

    id = models.CharField(primary_key=True, max_length=40, editable=False)
    type = models.CharField(max_length=60, db_index=True)
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="webhook_messages"
    )
    tenant_label = models.CharField(max_length=63, blank=True)
    payload = models.JSONField(help_text="The JSON body sent (type, timestamp, data).")
    audit_event = models.ForeignKey(
        AuditEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Events not born from one audit event (certificate.expiring) are sent once per key.
    dedup_key = models.CharField(max_length=255, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class Delivery(models.Model):
    """One message to one endpoint: retried on a schedule until it succeeds or gives up."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed (gave up)"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    # Denormalised for the admin's filters and for scoping (the message's type and shop).
    event_type = models.CharField(max_length=60, db_index=True)
    tenant_label = models.CharField(max_length=63, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    resend_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="resends"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "webhook delivery"
        verbose_name_plural = "webhook deliveries"
        permissions = [("resend_delivery", "Can re-send webhook deliveries")]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.endpoint.url}: {self.status}"


class Attempt(models.Model):
    """One HTTP attempt of a delivery, whatever its outcome."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_rows")
    number = models.PositiveSmallIntegerField()
    at = models.DateTimeField(default=timezone.now)
    succeeded = models.BooleanField()
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    response_body = models.TextField(blank=True, help_text="The start of the receiver's answer.")
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number}: {'ok' if self.succeeded else 'failed'}"
