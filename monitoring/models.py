from django.db import models
from django.utils import timezone

from tenants.models import Tenant


class ProbeResult(models.Model):
    """One uptime probe of one shop host. Pruned after PROBE_RETENTION_DAYS."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="probe_results")
    host = models.CharField(max_length=255)
    url = models.CharField(max_length=300)
    checked_at = models.DateTimeField(default=timezone.now, db_index=True)
    ok = models.BooleanField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    tls_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-checked_at", "-id"]
        indexes = [
            models.Index(fields=["host", "-checked_at"]),
            models.Index(fields=["tenant", "-checked_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.host} {'up' if self.ok else 'down'} at {self.checked_at:%Y-%m-%d %H:%M:%S}"
