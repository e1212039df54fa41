"""The audit trail's table: who changed what, from where, for every app."""

from django.db import models
from django.utils import timezone


class AuditEvent(models.Model):
    """Who changed what, from where. Written by every state-changing service; never edited."""

    class ActorType(models.TextChoices):
        STAFF = "staff", "Staff user"
        TENANT_USER = "tenant_user", "Tenant user"
        COMMAND = "command", "Management command"
        JOB = "job", "Background job"
        SYSTEM = "system", "System"
        API_KEY = "api_key", "API key"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_type = models.CharField(max_length=20, choices=ActorType.choices)
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=100, db_index=True)
    tenant = models.ForeignKey(
        "tenants.Tenant", null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    # Kept in the row so the trail still reads after the tenant row is gone.
    tenant_label = models.CharField(max_length=63, blank=True)
    target = models.CharField(max_length=255, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # The trail is append-only: no add/change/delete permission exists to grant.
        default_permissions = ("view",)
        # The table keeps the name it had when the model lived in the tenants app.
        db_table = "tenants_auditevent"
        indexes = [models.Index(fields=["tenant", "-created_at"], name="tenants_aud_tenant__e4e645_idx")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target}"
