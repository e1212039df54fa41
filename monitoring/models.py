from django.db import models
from django.utils import timezone

from tenants.models import Tenant


class ProbeState(models.Model):
    """The latest probe of each shop host, with its run of consecutive failures.

    Metrics, rules and the dashboard read this (one row per host) instead of the raw history.
    """

    host = models.CharField(max_length=255, unique=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="probe_states")
    url = models.CharField(max_length=300)
    checked_at = models.DateTimeField()
    ok = models.BooleanField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    tls_expires_at = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveIntegerField(default=0, help_text="Consecutive failed probes, 0 when up.")
    changed_at = models.DateTimeField(help_text="When the host last went up or down.")

    class Meta:
        ordering = ["host"]

    def __str__(self) -> str:
        return f"{self.host} {'up' if self.ok else 'down'}"


class ProbeHourly(models.Model):
    """Probes per host and hour: what uptime percentages and charts are computed from."""

    host = models.CharField(max_length=255)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()
    total = models.PositiveIntegerField()
    up = models.PositiveIntegerField()
    latency_ms_sum = models.FloatField(default=0)
    latency_count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["host", "hour"], name="probe_hourly_host_hour")]
        indexes = [models.Index(fields=["tenant", "hour"]), models.Index(fields=["hour"])]

    def __str__(self) -> str:
        return f"{self.host} {self.hour:%Y-%m-%d %H}h {self.up}/{self.total}"


class ProbeResult(models.Model):
    """One uptime probe of one shop host (raw history). Pruned after PROBE_RETENTION_DAYS."""

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


class Severity(models.TextChoices):
    CRITICAL = "critical", "Critical"
    WARNING = "warning", "Warning"
    INFO = "info", "Info"


SEVERITY_RANK: dict[str, int] = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class AlertRule(models.Model):
    """A built-in rule (one row per kind, made by a migration); staff edit threshold and severity."""

    class Kind(models.TextChoices):
        CERTIFICATE_EXPIRING = "certificate_expiring", "Certificate expiring"
        BACKUP_STALE = "backup_stale", "Backup older than RPO"
        RESTORE_DRILL_FAILED = "restore_drill_failed", "Restore drill failed"
        DEPLOYMENT_FAILED = "deployment_failed", "Deployment failed or rolled back"
        SHOP_DOWN = "shop_down", "Shop down"
        QUEUE_BACKLOG = "queue_backlog", "Queue backlog"
        FAILED_JOBS = "failed_jobs", "Failed jobs"
        WORKER_MISSING = "worker_missing", "Worker missing"
        OFFSITE_COPY_LAG = "offsite_copy_lag", "Off-site copy lag"
        OFFSITE_COPY_FAILED = "offsite_copy_failed", "Off-site copies failing"
        DR_DRILL_FAILED = "dr_drill_failed", "Disaster-recovery drill failed or overdue"
        WAL_ARCHIVE_STALE = "wal_archive_stale", "Platform WAL archive behind its RPO"

    kind = models.CharField(max_length=40, choices=Kind.choices, unique=True)
    enabled = models.BooleanField(default=True)
    threshold = models.PositiveIntegerField(help_text="Meaning depends on the rule: see its description.")
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    last_status = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind"]

    def __str__(self) -> str:
        return self.get_kind_display()


class Channel(models.Model):
    """Where alerts go. The secret (webhook URL, routing key, signing key) is stored encrypted."""

    class Kind(models.TextChoices):
        SLACK = "slack", "Slack incoming webhook"
        PAGERDUTY = "pagerduty", "PagerDuty Events API v2"
        EMAIL = "email", "E-mail"
        WEBHOOK = "webhook", "Webhook (HMAC-SHA256 signed)"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    min_severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    # Not secret: the webhook's or PagerDuty endpoint's URL, or e-mail recipients (comma separated).
    target = models.CharField(max_length=1000, blank=True)
    secret_encrypted = models.TextField(blank=True, editable=False)
    secret_hint = models.CharField(max_length=20, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [("send_test_alert", "Can send a test alert through a channel")]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"


class Incident(models.Model):
    """One problem, deduplicated by key while it is not resolved."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        RESOLVED = "resolved", "Resolved"

    UNRESOLVED = (Status.OPEN, Status.ACKNOWLEDGED)

    rule = models.ForeignKey(AlertRule, on_delete=models.PROTECT, related_name="incidents")
    dedup_key = models.CharField(max_length=255)
    title = models.CharField(max_length=300)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    details = models.JSONField(default=dict, blank=True)
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="incidents"
    )
    link = models.CharField(max_length=300, blank=True, help_text="Admin path of the thing at fault.")
    status = models.CharField(max_length=15, choices=Status.choices, default=Status.OPEN, db_index=True)
    opened_at = models.DateTimeField(default=timezone.now, db_index=True)
    last_seen_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=200, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        permissions = [
            ("acknowledge_incident", "Can acknowledge incidents"),
            ("resolve_incident", "Can resolve incidents (notifies the channels)"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["dedup_key"],
                condition=~models.Q(status="resolved"),
                name="incident_one_unresolved_per_key",
            )
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"


class Delivery(models.Model):
    """One notification to one channel, with every attempt's outcome."""

    class Event(models.TextChoices):
        TRIGGER = "trigger", "Trigger"
        ACKNOWLEDGE = "acknowledge", "Acknowledge"
        RESOLVE = "resolve", "Resolve"
        TEST = "test", "Test"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    incident = models.ForeignKey(
        Incident, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=15, choices=Event.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.event} to {self.channel.name}: {self.status}"


class StatusDashboard(models.Model):
    """No table: gives the admin's status dashboard its place in the admin index."""

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = verbose_name_plural = "status dashboard"

    def __str__(self) -> str:
        return "status dashboard"
