"""Custom domains: the rules for names, the plan limit, verification and its state machine.

    pending_verification -> verified -> certificate_pending -> active
    pending_verification / verification_failed: re-checked on a backoff schedule, removed when
        the claim expires (CUSTOM_DOMAIN_PENDING_EXPIRY_DAYS) so it never blocks the real owner;
    active -> moved when its DNS stops pointing at us (it stops routing at once), back to active
        if it returns, removed after CUSTOM_DOMAIN_MOVED_GRACE_DAYS.

Only Domain.ROUTABLE_STATUSES route; every status change calls routes_forget.
"""

import ipaddress
import logging
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import idna
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.audit import Action, Actor, audit_record
from core.db import connection
from tenants.domains import dns_checks, edge
from tenants.domains import jobs as domain_jobs  # it imports this module too: used at call time
from tenants.errors import PlanLimitExceeded, TenantError, TenantStateError, TenantValidationError
from tenants.models import Certificate, Domain, Tenant
from tenants.routing import routes_forget

logger = logging.getLogger(__name__)

S = Domain.Status
UNVERIFIED = (S.PENDING_VERIFICATION, S.VERIFICATION_FAILED)
# Delay before the n-th automatic re-check of an unverified domain (then every 2 hours).
BACKOFF = (timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=5), timedelta(minutes=10),
           timedelta(minutes=30), timedelta(hours=1))
BACKOFF_LAST = timedelta(hours=2)
LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Certificate issuances collected during a batch of checks: (domain id, actor).
CertificateQueue = list[tuple[int, Actor]]


class DomainConflict(TenantValidationError):
    """The name belongs to (or is claimed by) another shop."""


class CheckTooSoon(TenantError):
    """"Check now" pressed too often (per domain, or per shop); retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


# --- rules -------------------------------------------------------------------------------------


def domain_normalise(raw: str) -> str:
    """Lower-case, punycode, no trailing dot; refuse anything that is not a plain host name."""
    text = (raw or "").strip()
    if not text:
        raise TenantValidationError("Enter a domain name, like shop.example.com.")
    if "://" in text or "/" in text or "?" in text or "#" in text:
        raise TenantValidationError(
            f"{raw!r} looks like a URL; enter only the host name, like shop.example.com "
            "(no http://, no path)."
        )
    if "*" in text:
        raise TenantValidationError(f"{raw!r} is a wildcard; add each host name on its own.")
    if text.startswith("[") or _is_ip(text):
        raise TenantValidationError(f"{raw!r} is an IP address; enter a domain name instead.")
    if ":" in text:
        raise TenantValidationError(f"{raw!r} has a port; enter the name without ':port'.")
    text = text.rstrip(".")
    try:
        name = idna.encode(text, uts46=True).decode("ascii").lower()
    except idna.IDNAError:
        raise TenantValidationError(
            f"{raw!r} is not a valid domain name: use only letters, digits and hyphens between the "
            "dots, like shop.example.com (no spaces, underscores or symbols)."
        ) from None
    labels = name.split(".")
    if len(labels) < 2:
        raise TenantValidationError(
            f"{raw!r} is a single label; enter a full domain name, like shop.example.com."
        )
    if len(name) > 253 or not all(LABEL_RE.match(label) for label in labels):
        raise TenantValidationError(
            f"{raw!r} is not a valid domain name: each part must be 1-63 letters, digits or "
            "hyphens, not starting or ending with a hyphen, 253 characters at most in all."
        )
    if labels[-1].isdigit():
        raise TenantValidationError(f"{raw!r} is not a valid domain name (numeric top-level label).")
    base = settings.PLATFORM_BASE_DOMAIN.lower().rstrip(".")
    admin = settings.PLATFORM_ADMIN_HOST.lower().rstrip(".")
    if name in (base, admin) or name.endswith(f".{base}"):
        raise TenantValidationError(
            f"{name} is under the platform's own domain {base}; your shop already answers at its "
            "platform address. Add a domain you own instead."
        )
    return name


def _is_ip(text: str) -> bool:
    host = text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def cname_target_for(tenant: Tenant) -> str:
    return settings.CUSTOM_DOMAIN_CNAME_TARGET or f"{tenant.subdomain}.{settings.PLATFORM_BASE_DOMAIN}"


def custom_domain_count(tenant: Tenant) -> int:
    return (
        Domain.objects.filter(tenant=tenant, kind=Domain.Kind.CUSTOM)
        .exclude(status=S.DISABLED)
        .count()
    )


def plan_domain_limit_check(tenant: Tenant) -> None:
    limit = tenant.plan.max_custom_domains
    if limit == 0:
        raise PlanLimitExceeded(
            f"Your plan ({tenant.plan.name}) does not include custom domains; upgrade your plan "
            "to add one."
        )
    used = custom_domain_count(tenant)
    if used >= limit:
        raise PlanLimitExceeded(
            f"Your plan ({tenant.plan.name}) allows {limit} custom domain{'s' if limit != 1 else ''} "
            f"and you have {used}; remove one or upgrade your plan."
        )


# --- services ----------------------------------------------------------------------------------


def _forget(domain: Domain) -> None:
    routes_forget(domain.domain)


def _expire_lapsed_claim(name: str, actor: Actor) -> None:
    """Delete another shop's unverified claim on ``name`` once it has lapsed."""
    stale = Domain.objects.filter(
        domain=name, status__in=UNVERIFIED, expires_at__lte=timezone.now()
    ).select_related("tenant").first()
    if stale is not None:
        _delete(stale, actor, action=Action.DOMAIN_EXPIRED, reason="claim lapsed before verification")


def domain_add(*, tenant: Tenant, domain: str, actor: Actor) -> Domain:
    """Claim ``domain`` for ``tenant`` (pending verification); nothing is saved on bad input."""
    name = domain_normalise(domain)
    connection.set_schema_to_public()
    if tenant.status != Tenant.Status.ACTIVE:
        raise TenantStateError(f"Shop {tenant.subdomain!r} is {tenant.status}; it cannot add domains.")
    _expire_lapsed_claim(name, actor)
    existing = Domain.objects.filter(domain=name).first()
    if existing is not None:
        raise _conflict(existing, tenant, name)
    try:
        with transaction.atomic():
            # Lock the tenant row so two adds at once cannot both squeeze under the plan limit.
            Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
            tenant.refresh_from_db(fields=["plan"])
            plan_domain_limit_check(tenant)
            now = timezone.now()
            row = Domain.objects.create(
                tenant=tenant,
                domain=name,
                kind=Domain.Kind.CUSTOM,
                status=S.PENDING_VERIFICATION,
                is_primary=False,
                verification_token=secrets.token_urlsafe(24),
                expires_at=now + timedelta(days=settings.CUSTOM_DOMAIN_PENDING_EXPIRY_DAYS),
                next_check_at=now + BACKOFF[0],
                status_reason="Create the DNS records below, then press Check now.",
            )
            audit_record(actor=actor, action=Action.DOMAIN_ADDED, tenant=tenant, target=name)
    except IntegrityError:
        # Someone else inserted the same name between our check and our insert.
        existing = Domain.objects.filter(domain=name).first()
        raise _conflict(existing, tenant, name) if existing else TenantValidationError(
            f"{name} could not be added; try again."
        ) from None
    _forget(row)
    return row


def _conflict(existing: Domain, tenant: Tenant, name: str) -> TenantError:
    if existing.tenant_id == tenant.pk:
        return TenantValidationError(f"{name} is already on your list of domains.")
    # The same words whoever holds it and in whatever state: nothing about another shop's claim.
    return DomainConflict(
        f"{name} is already in use. If you own this domain, contact support to have it released."
    )


def _delete(domain: Domain, actor: Actor, *, action: Action, reason: str = "") -> None:
    name, tenant = domain.domain, domain.tenant
    with transaction.atomic():
        domain.delete()
        audit_record(actor=actor, action=action, tenant=tenant, target=name,
                     details={"reason": reason} if reason else {})
    routes_forget(name)
    _edge_changed(actor, f"{name} removed ({action.value})")


def domain_remove(*, domain: Domain, actor: Actor) -> None:
    if domain.kind != Domain.Kind.CUSTOM:
        raise TenantValidationError(f"{domain.domain} is the shop's platform address; it cannot be removed.")
    _delete(domain, actor, action=Action.DOMAIN_REMOVED)


def domain_make_primary(*, domain: Domain, actor: Actor) -> Domain:
    if domain.status not in Domain.ROUTABLE_STATUSES:
        raise TenantStateError(
            f"{domain.domain} is {domain.get_status_display().lower()}; only an active domain "
            "can be primary."
        )
    with transaction.atomic():
        Domain.objects.filter(tenant_id=domain.tenant_id, is_primary=True).exclude(pk=domain.pk).update(
            is_primary=False
        )
        domain.is_primary = True
        domain.save(update_fields=["is_primary", "updated_at"])
        audit_record(
            actor=actor, action=Action.DOMAIN_MADE_PRIMARY, tenant=domain.tenant, target=domain.domain
        )
    routes_forget(*Domain.objects.filter(tenant_id=domain.tenant_id).values_list("domain", flat=True))
    return domain


def domain_disable(*, domain: Domain, actor: Actor, reason: str = "") -> Domain:
    _set_status(domain, S.DISABLED, reason or "Disabled by staff.", next_check_at=None)
    audit_record(actor=actor, action=Action.DOMAIN_DISABLED, tenant=domain.tenant, target=domain.domain,
                 details={"reason": reason})
    _edge_changed(actor, f"{domain.domain} disabled")
    return domain


def domain_enable(*, domain: Domain, actor: Actor) -> Domain:
    """Undo a disable: the domain starts over from pending verification (checked right away)."""
    if domain.status != S.DISABLED:
        raise TenantStateError(f"{domain.domain} is {domain.get_status_display().lower()}, not disabled.")
    now = timezone.now()
    _set_status(domain, S.PENDING_VERIFICATION, "Re-enabled by staff; waiting for a check.",
                check_attempts=0, next_check_at=now,
                expires_at=now + timedelta(days=settings.CUSTOM_DOMAIN_PENDING_EXPIRY_DAYS))
    audit_record(actor=actor, action=Action.DOMAIN_ENABLED, tenant=domain.tenant, target=domain.domain)
    return domain


def _set_status(domain: Domain, status: str, reason: str, **fields: Any) -> None:
    # One UPDATE (DomainMixin.save would add a primary-domain query and a savepoint each time).
    values = {"status": status, "status_reason": reason, "updated_at": timezone.now(), **fields}
    Domain.objects.filter(pk=domain.pk).update(**values)
    for key, value in values.items():
        setattr(domain, key, value)
    _forget(domain)


def _backoff(attempts: int) -> timedelta:
    return BACKOFF[attempts] if attempts < len(BACKOFF) else BACKOFF_LAST


@dataclass(frozen=True)
class CheckResult:
    domain: Domain | None
    changed: bool
    message: str


def domain_diagnose(domain: Domain) -> dns_checks.Diagnosis:
    """The network part of a check (no database writes), safe to run in threads."""
    return dns_checks.diagnose(
        domain=domain.domain, token=domain.verification_token, cname_target=cname_target_for(domain.tenant),
        ownership_known=domain.ownership_verified_at is not None,
    )


def domain_verify(*, domain: Domain, actor: Actor, diagnosis: dns_checks.Diagnosis | None = None,
                  now: datetime | None = None, _queue: CertificateQueue | None = None) -> CheckResult:
    """Check one domain now and move it along its lifecycle. Idempotent.

    ``_queue`` (for domains_verify) collects certificate jobs to enqueue in one batch.
    """
    connection.set_schema_to_public()
    now = now or timezone.now()
    if domain.kind != Domain.Kind.CUSTOM or domain.status == S.DISABLED:
        return CheckResult(domain, False, f"{domain.domain} is {domain.status}; nothing to check.")
    if domain.status in UNVERIFIED and domain.expires_at and domain.expires_at <= now:
        _delete(domain, actor, action=Action.DOMAIN_EXPIRED, reason="not verified in time")
        return CheckResult(None, True, f"{domain.domain} was not verified in time and was removed.")
    if domain.status == S.MOVED and domain.moved_at and (
        domain.moved_at + timedelta(days=settings.CUSTOM_DOMAIN_MOVED_GRACE_DAYS) <= now
    ):
        _delete(domain, actor, action=Action.DOMAIN_REMOVED_AFTER_MOVE,
                reason=f"DNS pointed elsewhere for {settings.CUSTOM_DOMAIN_MOVED_GRACE_DAYS} days")
        return CheckResult(None, True, f"{domain.domain} pointed elsewhere too long and was removed.")

    diag = diagnosis if diagnosis is not None else domain_diagnose(domain)
    domain.last_checked_at = now
    domain.last_diagnosis = diag.as_dict()
    fields = {"last_checked_at": now, "last_diagnosis": domain.last_diagnosis}
    before = domain.status
    if diag.ownership_ok and domain.ownership_verified_at is None and not diag.inconclusive:
        fields["ownership_verified_at"] = now

    if diag.inconclusive:
        # A DNS outage says nothing about the tenant: keep the status, try again soon.
        reason = " ".join(diag.problems)
        _set_status(domain, before, reason, next_check_at=now + BACKOFF[0], **fields)
        return CheckResult(domain, False, reason)

    if before in UNVERIFIED:
        return _verify_unverified(domain, diag, actor, now, fields, _queue)
    return _recheck_verified(domain, diag, actor, now, fields, _queue)


def _verify_unverified(domain: Domain, diag: dns_checks.Diagnosis, actor: Actor, now: datetime,
                       fields: dict[str, Any], queue: CertificateQueue | None) -> CheckResult:
    if diag.ok:
        # verified -> certificate_pending in one step: the certificate is requested right away.
        _set_status(domain, S.CERTIFICATE_PENDING, "Verified; requesting a certificate from Let's Encrypt.",
                    verified_at=now, check_attempts=0, expires_at=None,
                    next_check_at=now + timedelta(minutes=settings.CUSTOM_DOMAIN_RECHECK_ACTIVE_MINUTES),
                    **fields)
        audit_record(actor=actor, action=Action.DOMAIN_VERIFIED, tenant=domain.tenant, target=domain.domain)
        certificate_request(domain=domain, actor=actor, queue=queue)
        return CheckResult(domain, True, f"{domain.domain} is verified; a certificate is on its way.")
    attempts = domain.check_attempts + 1
    reason = " ".join(diag.problems)
    _set_status(domain, S.VERIFICATION_FAILED, reason, check_attempts=attempts,
                next_check_at=now + _backoff(attempts), **fields)
    if attempts == 1:
        audit_record(actor=actor, action=Action.DOMAIN_VERIFICATION_FAILED, tenant=domain.tenant,
                     target=domain.domain, details={"problems": diag.problems})
    return CheckResult(domain, False, reason)


def _recheck_verified(domain: Domain, diag: dns_checks.Diagnosis, actor: Actor, now: datetime,
                      fields: dict[str, Any], queue: CertificateQueue | None) -> CheckResult:
    recheck = now + timedelta(minutes=settings.CUSTOM_DOMAIN_RECHECK_ACTIVE_MINUTES)
    before = domain.status
    if diag.routing_ok:
        if before == S.MOVED:
            cert = Certificate.objects.filter(domain=domain, status=Certificate.Status.ISSUED).first()
            status = S.ACTIVE if cert and cert.not_after and cert.not_after > now else S.CERTIFICATE_PENDING
            _set_status(domain, status, "DNS points at us again.", moved_at=None, next_check_at=recheck,
                        **fields)
            audit_record(
                actor=actor, action=Action.DOMAIN_RETURNED, tenant=domain.tenant, target=domain.domain
            )
            if status == S.CERTIFICATE_PENDING:
                certificate_request(domain=domain, actor=actor, queue=queue)
            _edge_changed(actor, f"{domain.domain} returned ({status})")
            return CheckResult(domain, True, f"{domain.domain} points at us again ({status}).")
        _set_status(domain, before, domain.status_reason if before != S.ACTIVE else "",
                    next_check_at=recheck, **fields)
        return CheckResult(domain, False, f"{domain.domain} is {before}; DNS still points at us.")
    reason = " ".join(p for p in diag.problems if not p.startswith("TXT record")) or " ".join(diag.problems)
    if before == S.MOVED:
        _set_status(domain, S.MOVED, reason, next_check_at=recheck, **fields)
        return CheckResult(domain, False, reason)
    grace = settings.CUSTOM_DOMAIN_MOVED_GRACE_DAYS
    _set_status(domain, S.MOVED,
                f"{reason} It stopped routing to your shop and will be removed after {grace} days "
                "unless DNS points at us again.",
                moved_at=now, next_check_at=recheck, **fields)
    audit_record(actor=actor, action=Action.DOMAIN_MOVED, tenant=domain.tenant, target=domain.domain,
                 details={"problems": diag.problems})
    logger.warning("custom domain %s moved away: %s", domain.domain, reason)
    _edge_changed(actor, f"{domain.domain} moved away")
    return CheckResult(domain, True, f"{domain.domain} no longer points at us; it stopped routing.")


def domains_due(*, now: datetime | None = None, limit: int = 5000) -> list[Domain]:
    now = now or timezone.now()
    return list(
        Domain.objects.filter(kind=Domain.Kind.CUSTOM, next_check_at__lte=now)
        .exclude(status=S.DISABLED)
        .select_related("tenant")
        .order_by("next_check_at")[:limit]
    )


def domains_verify(*, domains: list[Domain], actor: Actor, now: datetime | None = None) -> list[CheckResult]:
    """Check many domains with at most CUSTOM_DOMAIN_CHECK_CONCURRENCY at a time.

    Each worker thread checks its share one by one (DNS, then the state change on its own
    database connection, closed when it is done), so the database sees at most that many
    connections; certificate requests are queued in one batch at the end.
    """
    now = now or timezone.now()
    workers = max(1, min(settings.CUSTOM_DOMAIN_CHECK_CONCURRENCY, len(domains)))
    results: list[CheckResult | None] = [None] * len(domains)
    requests: CertificateQueue = []
    shares = [list(range(i, len(domains), workers)) for i in range(workers)]

    def run(indexes: list[int]) -> None:
        try:
            for i in indexes:
                try:
                    results[i] = domain_verify(domain=domains[i], actor=actor, now=now, _queue=requests)
                except TenantError as exc:
                    results[i] = CheckResult(domains[i], False, str(exc))
        finally:
            if workers > 1:
                connection.close()

    if workers == 1:
        run(shares[0])
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run, shares))
    domain_jobs.issue_certificate_jobs_enqueue(requests)
    return [r for r in results if r is not None]


# --- the certificate hand-off (tenants.domains.certificates does the ACME work) ------------------------


def certificate_request(*, domain: Domain, actor: Actor, queue: CertificateQueue | None = None) -> None:
    """Mark a verified domain certificate_pending and queue its issuance (or add it to ``queue``)."""
    Certificate.objects.bulk_create([Certificate(domain=domain)], ignore_conflicts=True)
    if domain.status == S.VERIFIED:
        _set_status(domain, S.CERTIFICATE_PENDING, "Requesting a certificate from Let's Encrypt.")
    if queue is not None:
        queue.append((domain.pk, actor))
    else:
        domain_jobs.issue_certificate_jobs_enqueue([(domain.pk, actor)])


def _edge_changed(actor: Actor, reason: str) -> None:
    edge.edge_changed_notify(actor=actor, reason=reason)


# --- shared by the owner's page and the API -------------------------------------------------


def domain_dns_records(domain: Domain) -> list[dict[str, Any]]:
    """The DNS records to set: the last check's table (with what was seen), else the expected one."""
    rows = (domain.last_diagnosis or {}).get("rows")
    if rows:
        return list(rows)
    target = cname_target_for(domain.tenant)
    expected = [
        dns_checks.DnsRow("TXT", dns_checks.verify_record_name(domain.domain), domain.verification_token,
                          "proves you own the domain"),
        dns_checks.DnsRow("CNAME", domain.domain, target, "sends your visitors to your shop"),
    ]
    if settings.CUSTOM_DOMAIN_EDGE_IPV4:
        expected.append(dns_checks.DnsRow("A", domain.domain, ", ".join(settings.CUSTOM_DOMAIN_EDGE_IPV4),
                                          "instead of the CNAME, for an apex domain"))
    return [vars(r) for r in expected]


def domain_check_request(*, domain: Domain, actor: Actor) -> None:
    """"Check now": limited per domain, then per shop (Redis counters), then queued as a job
    (DNS and the HTTP token fetch never run in a web request). Raises CheckTooSoon."""
    wait = settings.CUSTOM_DOMAIN_CHECK_NOW_SECONDS
    if not cache.add(f"domain-check-now:{domain.pk}", 1, wait):
        raise CheckTooSoon(f"{domain.domain} was checked a moment ago; try again in {wait} seconds.", wait)
    per_minute = settings.CUSTOM_DOMAIN_CHECK_NOW_PER_MINUTE
    now = time.time()
    window = f"domain-check-now-shop:{domain.tenant_id}:{int(now // 60)}"
    cache.add(window, 0, 120)
    if cache.incr(window) > per_minute:
        cache.delete(f"domain-check-now:{domain.pk}")  # this press did not run: do not hold the domain
        raise CheckTooSoon(
            f"Your shop may start {per_minute} checks a minute and has used them; "
            "try again in a minute (we also check every domain automatically).",
            max(1, 60 - int(now % 60)),
        )
    domain_jobs.check_queued_mark(domain.pk)
    domain_jobs.verify_domain_job.delay(domain.pk, *actor.job_args)
