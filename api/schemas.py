"""Request and response shapes of the API (pydantic, through django-ninja)."""

from datetime import datetime
from typing import Any, Literal

from ninja import Field, Schema


class FieldError(Schema):
    field: str
    location: str
    message: str


class Problem(Schema):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None


ERRORS = frozenset({400, 401, 403, 404, 405, 409, 413, 415, 422, 429})


def responses(ok: dict[int, Any]) -> dict[Any, Any]:
    return {**ok, ERRORS: Problem, 503: Problem}


SUBDOMAIN = Field(..., min_length=1, max_length=63, examples=["acme-shoes"])


class TenantCreateIn(Schema):
    subdomain: str = SUBDOMAIN
    name: str = Field(..., min_length=1, max_length=200, examples=["Acme Shoes"])
    plan: str = Field(..., min_length=1, max_length=50, examples=["growth"])
    owner_email: str = Field(..., min_length=3, max_length=254, examples=["owner@acme.example"])


class TenantOut(Schema):
    id: str
    subdomain: str
    name: str
    status: str
    status_reason: str
    plan: str
    owner_email: str
    host: str
    created_at: datetime
    activated_at: datetime | None
    url: str


class TenantCreated(Schema):
    tenant: TenantOut
    status_url: str
    # A one-time set-password link for the owner; only in the first answer, never in a replay.
    owner_set_password_link: str | None = None


class TenantPage(Schema):
    items: list[TenantOut]
    next_cursor: str | None


class SuspendIn(Schema):
    reason: str = Field(..., min_length=1, max_length=500)


class PlanIn(Schema):
    plan: str = Field(..., min_length=1, max_length=50)


class DeprovisionIn(Schema):
    drop_schema: bool = True


class DeprovisionPlan(Schema):
    subdomain: str
    drop_schema: bool
    will_remove: list[str]
    confirmation_token: str
    expires_in_seconds: int
    confirm_url: str


class DeprovisionConfirmIn(Schema):
    confirmation_token: str = Field(..., min_length=1, max_length=500)
    confirm_subdomain: str = Field(..., min_length=1, max_length=63)


class Accepted(Schema):
    status: str
    status_url: str
    job_id: str | None = None


class DomainIn(Schema):
    domain: str = Field(..., min_length=1, max_length=253, examples=["shop.example.com"])


class DnsRecord(Schema):
    """A record to create; `seen` once the last check found it, `found` what that check saw there."""

    type: str
    name: str
    value: str
    purpose: str = ""
    seen: bool = False
    found: list[str] = []


class CertificateOut(Schema):
    status: str
    not_after: datetime | None
    last_error: str


class DomainOut(Schema):
    id: int
    domain: str
    kind: str
    status: str
    status_reason: str
    is_primary: bool
    dns_records: list[DnsRecord]
    problems: list[str]
    ownership_verified: bool
    certificate: CertificateOut | None
    checking: bool
    last_checked_at: datetime | None
    expires_at: datetime | None


class DomainList(Schema):
    items: list[DomainOut]
    plan_allows: int
    used: int


class BackupOut(Schema):
    id: str
    kind: str
    purpose: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    size_bytes: int | None
    sha256: str
    error: str


class ExportOut(Schema):
    id: str
    status: str
    created_at: datetime
    tables_done: int
    tables_total: int
    error: str
    # Present once the export is ready: a short-lived link.
    download_url: str | None
    download_expires_in_seconds: int | None


class RestoreIn(Schema):
    backup_id: str = Field(..., min_length=1, max_length=64)
    confirm_subdomain: str = Field(..., min_length=1, max_length=63)


class ReleaseIn(Schema):
    version: str = Field(..., min_length=1, max_length=50, examples=["1.4.0"])
    images: dict[str, str] = Field(..., examples=[{"backend": "registry.example/api:1.4.0"}])
    git_sha: str = Field("", max_length=40)
    notes: str = Field("", max_length=2000)
    backward_compatible_migrations: bool = True


class ReleaseOut(Schema):
    version: str
    images: dict[str, str]
    git_sha: str
    notes: str
    backward_compatible_migrations: bool
    created_at: datetime


class DeployIn(Schema):
    environment: str = Field(..., min_length=1, max_length=100)
    version: str = Field(..., min_length=1, max_length=50)
    strategy: Literal["blue-green", "rolling"] = "blue-green"
    plan_only: bool = False


class RollbackIn(Schema):
    environment: str = Field(..., min_length=1, max_length=100)
    to_version: str | None = Field(None, max_length=50)
    confirm_migrations: bool = False


class StepOut(Schema):
    name: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    lines: list[str]


class DeploymentOut(Schema):
    id: int
    environment: str
    version: str
    previous_version: str | None
    strategy: str
    status: str
    is_rollback: bool
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: list[StepOut]
    status_url: str


class PlanOnly(Schema):
    environment: str
    version: str
    plan: dict[str, Any]


class UsageOut(Schema):
    plan: str
    products: int
    max_products: int
    custom_domains: int
    max_custom_domains: int
    storage_bytes: int
    max_storage_bytes: int
    over_limit: list[str]


class HealthOut(Schema):
    subdomain: str
    status: str
    usage: UsageOut
    uptime_percent_24h: float | None
    uptime_percent_30d: float | None
    last_probe_ok: bool | None
    last_probe_at: datetime | None
    certificates: list[dict[str, Any]]


# No control characters (PostgreSQL refuses NUL in text; no header or log injection either).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
WEBHOOK_URL = Field(..., min_length=1, max_length=1000, pattern=PRINTABLE, examples=["https://example.com/hooks"])
WEBHOOK_EVENTS: Any = Field(default_factory=list, max_length=50, examples=[["tenant.suspended"]],
                       description="Event types to receive; empty: every type.")


class WebhookIn(Schema):
    url: str = WEBHOOK_URL
    events: list[str] = WEBHOOK_EVENTS
    description: str = Field("", max_length=200, pattern=PRINTABLE)


class WebhookStaffIn(WebhookIn):
    # Empty: a platform endpoint (every shop's events); a subdomain: that shop's events only.
    tenant: str | None = Field(None, min_length=1, max_length=63, pattern=r"^[A-Za-z0-9-]+$",
                               examples=["acme-shoes"])


class WebhookPatch(Schema):
    url: str | None = Field(None, min_length=1, max_length=1000, pattern=PRINTABLE)
    events: list[str] | None = Field(None, max_length=50)
    description: str | None = Field(None, max_length=200, pattern=PRINTABLE)
    enabled: bool | None = None


class WebhookOut(Schema):
    id: int
    url: str
    events: list[str]
    description: str
    tenant: str | None
    enabled: bool
    disabled_reason: str
    consecutive_failures: int
    last_success_at: datetime | None
    created_at: datetime


class WebhookList(Schema):
    items: list[WebhookOut]


class WebhookCreated(WebhookOut):
    # whsec_...: shown in this answer only; verify each delivery's signature with it.
    secret: str


class WebhookSecret(Schema):
    secret: str
    old_secret_signs_until: datetime | None


class WebhookDeliveryOut(Schema):
    id: int
    message_id: str
    event_type: str
    status: str
    attempts: int
    response_code: int | None
    last_error: str
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    resend_of: int | None


class WebhookDeliveryPage(Schema):
    items: list[WebhookDeliveryOut]
    next_cursor: int | None  # pass back as `cursor` for older deliveries
