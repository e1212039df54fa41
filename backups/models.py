import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from tenants.models import Tenant


class StoredObject(models.Model):
    """What backups and exports share: an object in the backup store, made by a job for a tenant."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="%(class)ss"
    )
    # Kept in the row so the list still reads after the tenant row is gone.
    tenant_label = models.CharField(max_length=63, blank=True)
    status_reason = models.TextField(blank=True)
    storage = models.CharField(max_length=20, blank=True, help_text="Backend that holds the object")
    location = models.CharField(max_length=500, blank=True, help_text="Object key in the backend")
    # A multipart upload that could not be aborted yet (storage unreachable); the reaper retries.
    pending_upload_id = models.CharField(max_length=500, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Updated while the job makes progress; the reaper fails a running one that stopped.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The object (and row) is deleted after this: erasure of a deprovisioned tenant, expired export.
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class Backup(StoredObject):
    """One dump in the backup store, with its manifest.

    Life: queued -> running -> uploaded -> verified, or failed (reason).
    """

    class Kind(models.TextChoices):
        TENANT = "tenant", "Tenant schema"
        PLATFORM = "platform", "Platform (public schema)"
        DATABASE = "database", "Whole database"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        UPLOADED = "uploaded", "Uploaded"
        VERIFIED = "verified", "Verified"
        FAILED = "failed", "Failed"

    class Purpose(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        MANUAL = "manual", "Manual"
        SAFETY = "safety", "Safety copy before a restore"
        FINAL = "final", "Final, before deprovisioning"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
    RESTORABLE_STATUSES = (Status.VERIFIED,)

    kind = models.CharField(max_length=10, choices=Kind.choices)
    purpose = models.CharField(max_length=10, choices=Purpose.choices, default=Purpose.MANUAL)
    schema_name = models.CharField(max_length=63, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    manifest = models.JSONField(default=dict, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "-created_at"]),
            # Each tenant's newest verified backup, read for every tenant by the RPO rule and /metrics.
            models.Index(
                fields=["tenant", "-finished_at"],
                condition=Q(status="verified"),
                name="backups_verified_latest",
            ),
        ]
        permissions = [
            ("restore_backup", "Can restore a tenant from a backup"),
            ("download_backup", "Can download a backup"),
            # Platform and whole-database dumps hold staff password hashes: no default role has it.
            ("download_platform_backup", "Can download platform and whole-database backups"),
            ("verify_backup", "Can verify backups (read back, compare sha256)"),
            ("run_restore_drill", "Can run a restore drill on a backup"),
        ]
        constraints = [
            # The lock: one queued or running backup per tenant, and per platform/database kind.
            models.UniqueConstraint(
                fields=["tenant"],
                condition=Q(status__in=["queued", "running"], tenant__isnull=False),
                name="backups_one_active_per_tenant",
            ),
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(status__in=["queued", "running"], tenant__isnull=True),
                name="backups_one_active_per_kind",
            ),
        ]

    def __str__(self) -> str:
        what = self.tenant_label or self.kind
        return f"{what} {self.created_at:%Y-%m-%d %H:%M} ({self.status})"


class Restore(models.Model):
    """A restore of a tenant from a backup, in place or as a new tenant."""

    class Mode(models.TextChoices):
        IN_PLACE = "in_place", "In place"
        AS_NEW = "as_new", "As a new tenant"

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="restores")
    # Kept (as null) when retention later deletes the backup, so the history still reads.
    backup = models.ForeignKey(Backup, null=True, on_delete=models.SET_NULL, related_name="restores")
    mode = models.CharField(max_length=10, choices=Mode.choices)
    target_subdomain = models.CharField(max_length=63, blank=True)
    new_tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="restored_from"
    )
    safety_backup = models.ForeignKey(
        Backup, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # PITR (backups/pitr): the moment restored to, from the continuous archive, instead of a backup.
    to_time = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    status_reason = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"], condition=Q(status="running"), name="restores_one_running_per_tenant"
            )
        ]

    def __str__(self) -> str:
        return f"{self.mode} restore of {self.tenant.subdomain} ({self.status})"


class RestoreDrill(models.Model):
    """A backup restored into a scratch database and checked against its manifest."""

    backup = models.ForeignKey(Backup, null=True, on_delete=models.SET_NULL, related_name="drills")
    backup_label = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    passed = models.BooleanField(default=False)
    # What was checked: [{"check": "sha256", "ok": true, "detail": "..."}...]
    checks = models.JSONField(default=list, blank=True)
    rto_seconds = models.FloatField(null=True, blank=True, help_text="Measured restore time")
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"drill {self.started_at:%Y-%m-%d %H:%M} {'pass' if self.passed else 'FAIL'}"


class Export(StoredObject):
    """A portable archive of one tenant's tables (CSV files in a tar.gz), made by a job.

    Life: queued -> running -> ready, or failed (reason). Downloaded through a short-lived link;
    deleted, object and row, after BACKUP_EXPORT_KEEP_DAYS: a copy of a shop's data is kept no
    longer than it is needed.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    # {table: rows}, and how far a running export has got.
    tables = models.JSONField(default=dict, blank=True)
    tables_done = models.PositiveIntegerField(default=0)
    tables_total = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"],
                condition=Q(status__in=["queued", "running"], tenant__isnull=False),
                name="exports_one_active_per_tenant",
            )
        ]

    def __str__(self) -> str:
        return f"export of {self.tenant_label} {self.created_at:%Y-%m-%d %H:%M} ({self.status})"


# === Off-site copies and disaster-recovery drills (backups/services/offsite.py, backups/services/dr.py) ===


class OffsiteCopy(models.Model):
    """A dump or export copied to the second store (another region), checked there by its sha256.

    Life: queued -> copying -> verified, or failed (retried with a backoff while the source is in
    the primary store); a verified copy whose read-back no longer matches becomes corrupt (and is
    copied again). Kept by its own retention, longer than the primary's: the row outlives the
    primary Backup (``backup`` set null), so it carries what a restore needs.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        COPYING = "copying", "Copying"
        VERIFIED = "verified", "Verified"
        FAILED = "failed", "Failed"
        CORRUPT = "corrupt", "Corrupt (read-back mismatch)"

    EXPORT = "export"  # kind of an export's copy; the others are Backup.Kind values
    RETRYABLE = (Status.FAILED, Status.CORRUPT)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    backup = models.ForeignKey(
        Backup, null=True, blank=True, on_delete=models.SET_NULL, related_name="offsite_copies"
    )
    export = models.ForeignKey(
        Export, null=True, blank=True, on_delete=models.SET_NULL, related_name="offsite_copies"
    )
    kind = models.CharField(max_length=10)
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    tenant_label = models.CharField(max_length=63, blank=True)
    # When the source was made (retention buckets) and became ready in the primary (copy lag).
    source_created_at = models.DateTimeField()
    source_ready_at = models.DateTimeField()
    location = models.CharField(max_length=500, help_text="Object key, the same in both stores")
    store = models.CharField(max_length=300, blank=True, help_text="The off-site store it was copied to")
    sha256 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    status_reason = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Failed attempts in a row")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(default=timezone.now, help_text="Last put on the queue")
    started_at = models.DateTimeField(null=True, blank=True)
    copied_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True, help_text="Last read back and matched")
    duration_seconds = models.FloatField(null=True, blank=True)
    # Erasure of a deprovisioned shop, an export's end of life: the copy goes with the original.
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-source_created_at"]
        verbose_name = "off-site copy"
        verbose_name_plural = "off-site copies"
        constraints = [
            models.UniqueConstraint(
                fields=["backup"], condition=Q(backup__isnull=False), name="offsite_one_copy_per_backup"
            ),
            models.UniqueConstraint(
                fields=["export"], condition=Q(export__isnull=False), name="offsite_one_copy_per_export"
            ),
        ]
        permissions = [
            ("copy_offsite", "Can copy backups to the off-site store and verify the copies"),
            ("run_dr_drill", "Can run a disaster-recovery drill from the off-site store"),
        ]

    def __str__(self) -> str:
        return f"off-site copy of {self.tenant_label or self.kind} {self.source_created_at:%Y-%m-%d %H:%M}"


class DisasterRecoveryDrill(models.Model):
    """A restore of the platform database and one shop from the off-site store alone.

    It assumes the primary store (and the live database) are gone: the dumps, their manifests and
    the shop to restore are found in the second store and in the restored platform database.
    """

    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    trigger = models.CharField(max_length=20, help_text="scheduled, command or admin")
    requested_by = models.CharField(max_length=200, blank=True)
    passed = models.BooleanField(default=False)
    store = models.CharField(max_length=300, blank=True, help_text="Where it restored from")
    platform_key = models.CharField(max_length=500, blank=True)
    tenant_label = models.CharField(max_length=63, blank=True)
    shop_key = models.CharField(max_length=500, blank=True)
    rto_seconds = models.FloatField(null=True, blank=True, help_text="Platform and shop restored and checked")
    # [{"check": "platform sha256", "ok": true, "detail": "...", "seconds": 0.4}...]
    checks = models.JSONField(default=list, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]
        verbose_name = "disaster-recovery drill"

    def __str__(self) -> str:
        return f"DR drill {self.started_at:%Y-%m-%d %H:%M} {'pass' if self.passed else 'FAIL'}"
# === Continuous archive and point-in-time recovery (pgBackRest; backups/pitr/) ===


class PitrBackup(models.Model):
    """A pgBackRest backup of the whole cluster (full or differential) in one repository.

    Life: running -> succeeded, or failed (reason); expired once pgBackRest's retention removed it.
    Rows are also made for backups pgBackRest lists that we did not start (an operator's own).
    """

    class Type(models.TextChoices):
        FULL = "full", "Full"
        DIFF = "diff", "Differential"
        INCR = "incr", "Incremental"

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired (retention)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    label = models.CharField(max_length=64, blank=True, db_index=True, help_text="pgBackRest's label")
    type = models.CharField(max_length=4, choices=Type.choices)
    repo = models.PositiveSmallIntegerField(default=1, help_text="pgBackRest repository (2: second region)")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING, db_index=True)
    status_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    # From pgBackRest: the backup is consistent from stopped_at on (the window's earliest moment).
    backup_started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    wal_start = models.CharField(max_length=24, blank=True)
    wal_stop = models.CharField(max_length=24, blank=True)
    size_bytes = models.BigIntegerField(default=0, help_text="Cluster size backed up")
    repo_size_bytes = models.BigIntegerField(default=0, help_text="Bytes stored in the repository")

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "cluster backup (pgBackRest)"
        verbose_name_plural = "cluster backups (pgBackRest)"
        permissions = [
            ("restore_to_time", "Can restore a shop or the database to a moment (PITR)"),
        ]
        constraints = [
            # The lock: pgBackRest runs one backup of a stanza at a time.
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="running"), name="pitr_one_running"
            ),
        ]

    def __str__(self) -> str:
        when = self.label or f"{self.created_at:%Y-%m-%d %H:%M}"
        return f"{self.type} {when} repo{self.repo} ({self.status})"


class WalArchive(models.Model):
    """The continuous archive as last checked (one row): per repository, its WAL range and status."""

    checked_at = models.DateTimeField(null=True, blank=True)
    stanza_ok = models.BooleanField(default=False)
    detail = models.TextField(blank=True)
    # [{"repo": 1, "status": "ok", "wal_min": "...", "wal_max": "..."}]
    repos = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name = "WAL archive status"

    def __str__(self) -> str:
        return f"WAL archive checked {self.checked_at or 'never'} ({'ok' if self.stanza_ok else 'not ok'})"
