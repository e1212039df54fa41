import uuid
from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone
from django_tenants.models import DomainMixin, TenantMixin


class Plan(models.Model):
    class BackupFrequency(models.TextChoices):
        HOURLY = "hourly", "Hourly"
        DAILY = "daily", "Daily"
        WEEKLY = "weekly", "Weekly"

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=50, unique=True)
    monthly_price = models.DecimalField(
        max_digits=10, decimal_places=2, default=Decimal("0.00"), validators=[MinValueValidator(0)]
    )
    max_products = models.PositiveIntegerField(default=100)
    max_custom_domains = models.PositiveIntegerField(default=0)
    max_storage_mb = models.PositiveIntegerField(default=500)
    backup_retention_days = models.PositiveIntegerField(default=7)
    backup_frequency = models.CharField(
        max_length=10, choices=BackupFrequency.choices, default=BackupFrequency.HOURLY
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["monthly_price", "name"]

    def __str__(self) -> str:
        return self.name


class Tenant(TenantMixin):
    """A shop. Its data lives in the PostgreSQL schema ``schema_name``."""

    class Status(models.TextChoices):
        PROVISIONING = "provisioning", "Provisioning"
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        DEPROVISIONING = "deprovisioning", "Deprovisioning"
        DELETED = "deleted", "Deleted"
        FAILED = "failed", "Failed"

    # Provisioning creates and renames schemas itself (see tenants.schema_pool).
    auto_create_schema = False
    auto_drop_schema = False

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    subdomain = models.CharField(max_length=63, unique=True)
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="tenants")
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.PROVISIONING, db_index=True
    )
    status_reason = models.TextField(blank=True)
    owner_email = models.EmailField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    # Usage snapshot, refreshed by a job so that admin lists never query each schema.
    product_count = models.PositiveIntegerField(default=0)
    schema_bytes = models.BigIntegerField(default=0)
    usage_refreshed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["subdomain"]
        # Lifecycle changes go through tenants.services (audited); these gate the admin actions.
        permissions = [
            ("provision_tenant", "Can provision tenants"),
            ("suspend_tenant", "Can suspend tenants"),
            ("resume_tenant", "Can resume tenants"),
            ("change_tenant_plan", "Can move a tenant to another plan"),
            ("deprovision_tenant", "Can deprovision tenants (drops their schema)"),
            ("issue_owner_link", "Can issue an owner set-password link"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.subdomain})"

    def set_status(self, status: str, reason: str = "") -> None:
        self.status = status
        self.status_reason = reason
        if status == self.Status.ACTIVE and self.activated_at is None:
            self.activated_at = timezone.now()
        self.save(update_fields=["status", "status_reason", "activated_at", "updated_at"])


class Domain(DomainMixin):
    """A host name that routes to a tenant: its platform subdomain or a custom domain."""

    class Kind(models.TextChoices):
        PLATFORM = "platform", "Platform subdomain"
        CUSTOM = "custom", "Custom domain"

    class Status(models.TextChoices):
        PENDING_VERIFICATION = "pending_verification", "Pending verification"
        VERIFICATION_FAILED = "verification_failed", "Verification failed"
        VERIFIED = "verified", "Verified"
        CERTIFICATE_PENDING = "certificate_pending", "Certificate pending"
        ACTIVE = "active", "Active"
        MOVED = "moved", "Moved"
        DISABLED = "disabled", "Disabled"

    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CUSTOM)
    status = models.CharField(
        max_length=30, choices=Status.choices, default=Status.PENDING_VERIFICATION, db_index=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Custom-domain verification state.
    verification_token = models.CharField(max_length=64, blank=True)
    # Why the domain is in its status, in words the tenant can act on.
    status_reason = models.TextField(blank=True)
    check_attempts = models.PositiveIntegerField(default=0)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    next_check_at = models.DateTimeField(null=True, blank=True, db_index=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    # Ownership proven once (TXT or HTTP token) stays proven, even before DNS points at us.
    ownership_verified_at = models.DateTimeField(null=True, blank=True)
    # An unverified claim lapses at this time, so it never blocks the real owner for ever.
    expires_at = models.DateTimeField(null=True, blank=True)
    moved_at = models.DateTimeField(null=True, blank=True)
    # The last check's DNS table and problems (shown on the self-service page and in the admin).
    last_diagnosis = models.JSONField(default=dict, blank=True)

    # Only these statuses route traffic to the tenant; anything else answers 404.
    ROUTABLE_STATUSES = (Status.ACTIVE,)

    class Meta:
        ordering = ["domain"]
        # The domain admin's actions (they talk to DNS and the CA, or stop routing).
        permissions = [
            ("verify_domain", "Can re-verify custom domains"),
            ("issue_certificate", "Can issue or renew certificates of custom domains"),
            ("disable_domain", "Can disable custom domains (stop routing)"),
            ("enable_domain", "Can enable disabled custom domains"),
        ]

    def __str__(self) -> str:
        return self.domain


class SchemaPoolEntry(models.Model):
    """A spare, fully migrated schema waiting to be renamed into a new tenant's schema."""

    class Status(models.TextChoices):
        BUILDING = "building", "Building"
        READY = "ready", "Ready"

    schema_name = models.CharField(max_length=63, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.BUILDING)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        verbose_name_plural = "schema pool entries"

    def __str__(self) -> str:
        return self.schema_name


class SchemaTemplate(models.Model):
    """The captured build script of a fully migrated tenant schema, for one migration state.

    ``tenants.schema_template`` records the SQL that migrating a fresh schema runs, and the rows
    the migrations leave behind, and replays them to build spares without running migrations.
    Kept in the database, not a cache: whoever can write it runs SQL as the platform.
    """

    key = models.CharField(max_length=64, unique=True)  # sha256 of the migrations (their code too)
    script = models.TextField()
    migrations = models.PositiveIntegerField()
    statements = models.PositiveIntegerField()
    # Why the migrations cannot be replayed (then spares are migrated one by one); empty if they can.
    refused = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"schema template {self.key[:12]}"


# ---------------------------------------------------------------------------------------------
# Custom domains: certificates, ACME account and challenges (verification state is on Domain).
# ---------------------------------------------------------------------------------------------


class Certificate(models.Model):
    """The TLS certificate of one custom domain; its status is tracked apart from the domain's."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ISSUED = "issued", "Issued"
        FAILED = "failed", "Failed"

    domain = models.OneToOneField(Domain, on_delete=models.CASCADE, related_name="certificate")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    last_error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    issued_at = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(null=True, blank=True, db_index=True)
    serial = models.CharField(max_length=64, blank=True)
    # Encrypted at rest (core.crypto); never shown anywhere.
    chain_encrypted = models.TextField(blank=True)
    key_encrypted = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["not_after"]

    def __str__(self) -> str:
        return f"certificate for {self.domain_id} ({self.status})"


class PlatformCertificate(models.Model):
    """The platform's own wildcard certificate (``*.<base>`` and ``<base>``), issued by ACME DNS-01.

    Apart from Certificate, which belongs to one custom domain: this one belongs to no domain row
    and is validated through a DNS provider (tenants/domains/dns_providers.py), not HTTP-01.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ISSUED = "issued", "Issued"
        FAILED = "failed", "Failed"

    base_domain = models.CharField(max_length=253, unique=True)
    names = models.JSONField(default=list)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    last_error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    issued_at = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)
    serial = models.CharField(max_length=64, blank=True)
    # Encrypted at rest (core.crypto); never shown anywhere.
    chain_encrypted = models.TextField(blank=True)
    key_encrypted = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["base_domain"]
        permissions = [("issue_platform_certificate", "Can issue or renew the platform wildcard certificate")]

    def __str__(self) -> str:
        return f"*.{self.base_domain}"


class AcmeAccount(models.Model):
    """One ACME account per directory (Let's Encrypt production, staging, Pebble)."""

    directory_url = models.URLField(max_length=500, unique=True)
    account_url = models.URLField(max_length=500, blank=True)
    key_encrypted = models.TextField()
    contact_email = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.directory_url


class AcmeChallenge(models.Model):
    """A pending HTTP-01 answer, served at /.well-known/acme-challenge/<token> for its domain."""

    token = models.CharField(max_length=128, unique=True)
    domain = models.CharField(max_length=253, db_index=True)
    key_authorization = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.domain} {self.token}"
