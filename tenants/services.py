"""Tenant lifecycle: request, provision, suspend, resume, change plan, deprovision.

One set of services behind the admin, the management commands and the RQ jobs. Each validates
first (nothing is touched on bad input), does the work in a transaction where it can, writes an
audit event, and raises a TenantError whose message says what to fix.
"""

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.contrib.auth.tokens import default_token_generator
from django.db import IntegrityError, OperationalError, transaction
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django_tenants.utils import quote_schema_name, schema_exists

from core.audit import Action, Actor, audit_record
from core.db import connection
from tenants import jobs  # jobs import this module too: only attributes are used at call time
from tenants.errors import PlanLimitExceeded, TenantStateError, TenantValidationError
from tenants.models import Domain, Plan, Tenant
from tenants.routing import routes_forget, tenant_routes_forget
from tenants.schema_pool import pool_claim, pool_schema_build, pool_spare_build_claimed
from tenants.selectors import provision_clashes, tenant_live_usage
from tenants.signals import schema_pre_drop
from tenants.validation import email_normalise, schema_name_for, subdomain_normalise

logger = logging.getLogger(__name__)

OWNER_GROUP = "Shop owners"


@dataclass(frozen=True)
class ProvisionResult:
    tenant: Tenant
    # A one-time link for the owner to set a password; None when the tenant was already active.
    owner_link: str | None
    from_pool: bool


class _PoolEmpty(Exception):
    pass


def platform_host_for(subdomain: str) -> str:
    return f"{subdomain}.{settings.PLATFORM_BASE_DOMAIN}"


def tenant_url(host: str, path: str = "/") -> str:
    port = f":{settings.PLATFORM_PUBLIC_PORT}" if settings.PLATFORM_PUBLIC_PORT else ""
    return f"{settings.PLATFORM_PUBLIC_SCHEME}://{host}{port}{path}"


def plan_resolve(plan: Plan | str) -> Plan:
    found: Plan | None
    if isinstance(plan, Plan):
        found = plan
    else:
        found = Plan.objects.filter(slug=plan).first()
        if found is None:
            known = ", ".join(Plan.objects.filter(is_active=True).values_list("slug", flat=True))
            raise TenantValidationError(f"Unknown plan {plan!r}. Active plans: {known or 'none'}.")
    if not found.is_active:
        raise TenantValidationError(f"Plan {found.slug!r} is not active; choose an active plan.")
    return found


def tenant_request(
    *, subdomain: str, name: str, plan: Plan | str, owner_email: str, actor: Actor
) -> Tenant:
    """Validate and record a new tenant in ``provisioning``; no schema is touched yet.

    A subdomain whose earlier provisioning failed (or was interrupted) can be requested again.
    """
    subdomain = subdomain_normalise(subdomain)
    name = (name or "").strip()
    if not name:
        raise TenantValidationError("The shop needs a name (--name \"Acme Shoes\").")
    owner_email = email_normalise(owner_email)
    plan = plan_resolve(plan)
    connection.set_schema_to_public()

    host, schema_name = platform_host_for(subdomain), schema_name_for(subdomain)
    # One round trip for the three clashes; the tenant itself only on the (rare) retry path.
    clash = provision_clashes(subdomain=subdomain, host=host, schema_name=schema_name)
    if clash.tenant_id is not None:
        existing = Tenant.objects.get(pk=clash.tenant_id)
        if existing.status not in (Tenant.Status.FAILED, Tenant.Status.PROVISIONING):
            raise TenantValidationError(
                f"Subdomain {subdomain!r} is taken by {existing.name!r} ({existing.status})."
            )
        existing.name, existing.plan, existing.owner_email = name, plan, owner_email
        existing.save(update_fields=["name", "plan", "owner_email", "updated_at"])
        audit_record(actor=actor, action=Action.TENANT_RETRY_REQUESTED, tenant=existing, target=subdomain)
        return existing

    if clash.host_taken:
        raise TenantValidationError(f"Host {host!r} is already routed to another tenant.")
    if clash.schema_exists:
        raise TenantValidationError(
            f"A schema named {schema_name!r} already exists in the database (left by an earlier "
            "tenant?). Restore or drop it before reusing this subdomain."
        )
    try:
        with transaction.atomic():
            tenant = Tenant.objects.create(
                subdomain=subdomain,
                schema_name=schema_name,
                name=name,
                plan=plan,
                owner_email=owner_email,
                status=Tenant.Status.PROVISIONING,
            )
            audit_record(
                actor=actor,
                action=Action.TENANT_REQUESTED,
                tenant=tenant,
                target=subdomain,
                details={"plan": plan.slug, "owner_email": owner_email},
            )
    except IntegrityError:
        raise TenantValidationError(f"Subdomain {subdomain!r} was just taken; pick another.") from None
    return tenant


def tenant_provision(
    *, subdomain: str, name: str, plan: Plan | str, owner_email: str, actor: Actor
) -> ProvisionResult:
    tenant = tenant_request(
        subdomain=subdomain, name=name, plan=plan, owner_email=owner_email, actor=actor
    )
    return _provision(tenant, actor)


def tenant_provision_run(*, tenant_id: uuid.UUID | str, actor: Actor) -> ProvisionResult:
    """Turn a requested tenant into a live shop: schema, platform domain, owner. Idempotent."""
    connection.set_schema_to_public()
    return _provision(Tenant.objects.get(pk=tenant_id), actor)


def _provision(tenant: Tenant, actor: Actor) -> ProvisionResult:
    if tenant.status == Tenant.Status.ACTIVE:
        return ProvisionResult(tenant, None, from_pool=False)
    if tenant.status not in (Tenant.Status.PROVISIONING, Tenant.Status.FAILED):
        raise TenantStateError(f"Tenant {tenant.subdomain!r} is {tenant.status}; nothing to provision.")

    from_pool = True
    try:
        for _attempt in range(3):
            try:
                tenant, owner_link, claimed = _provision_in_transaction(tenant, actor)
                from_pool = from_pool and claimed
                break
            except _PoolEmpty:
                # Stock-speed fallback: build a spare now (as a pool schema, so a crash here
                # leaves only a reapable spare), then claim it like any other.
                from_pool = False
                pool_schema_build()
        else:
            raise TenantStateError("Could not claim a spare schema after 3 attempts; retry.")
    except OperationalError as exc:
        if "could not obtain lock" not in str(exc):
            _provision_failed(tenant, exc, actor)
            raise
        # Someone else holds the tenant row: their run decides the outcome, not ours.
        raise TenantStateError(
            f"{tenant.subdomain!r} is being provisioned by another process right now."
        ) from None
    except Exception as exc:
        _provision_failed(tenant, exc, actor)
        raise
    finally:
        connection.set_schema_to_public()

    routes_forget(platform_host_for(tenant.subdomain))
    jobs.pool_refill_request()
    return ProvisionResult(tenant, owner_link, from_pool)


def _provision_failed(tenant: Tenant, exc: Exception, actor: Actor) -> None:
    connection.set_schema_to_public()
    reason = f"{type(exc).__name__}: {exc}"[:2000]
    # Never overwrite a tenant that another run managed to activate meanwhile.
    Tenant.objects.filter(
        pk=tenant.pk, status__in=(Tenant.Status.PROVISIONING, Tenant.Status.FAILED)
    ).update(status=Tenant.Status.FAILED, status_reason=reason)
    audit_record(
        actor=actor, action=Action.TENANT_PROVISION_FAILED, tenant=tenant, target=tenant.subdomain,
        details={"reason": reason},
    )


def _provision_in_transaction(tenant: Tenant, actor: Actor) -> tuple[Tenant, str | None, bool]:
    """(tenant, owner link, whether its schema came from the pool)."""
    with transaction.atomic():
        # NOWAIT: a second provisioner of the same tenant fails fast instead of queueing.
        # The plan comes along (the audit names it) without locking its row.
        tenant = (
            Tenant.objects.select_related("plan")
            .select_for_update(nowait=True, of=("self",))
            .get(pk=tenant.pk)
        )
        if tenant.status == Tenant.Status.ACTIVE:  # another run finished first
            return tenant, None, True
        pool_schema = pool_claim()
        claimed = pool_schema is not None
        if pool_schema is None:
            # Empty pool: replay a spare in this transaction, so no one else can take it.
            pool_schema = pool_spare_build_claimed()
        if pool_schema is None:
            raise _PoolEmpty
        with connection.cursor() as cursor:
            cursor.execute(
                f"ALTER SCHEMA {quote_schema_name(pool_schema)} "
                f"RENAME TO {quote_schema_name(tenant.schema_name)}"
            )
        owner_link = _owner_create(tenant)
        tenant_activate(tenant=tenant, actor=actor)
    return tenant, owner_link, claimed


def tenant_activate(*, tenant: Tenant, actor: Actor, details: dict[str, Any] | None = None) -> str:
    """Route a tenant whose schema is in place: its platform domain, status active, the audit.

    The one definition of "this shop is now live", for provisioning and for restore-as-new. Call
    it inside the caller's transaction; forget the host's cached route after the commit.
    Returns the platform host.
    """
    host = platform_host_for(tenant.subdomain)
    platform_domain = {
        "tenant": tenant, "kind": Domain.Kind.PLATFORM, "status": Domain.Status.ACTIVE, "is_primary": True,
    }
    # One INSERT ... ON CONFLICT (domain) DO UPDATE, not DomainMixin.save (a savepoint, an UPDATE
    # demoting the tenant's other primaries, the INSERT): a tenant being activated has no other
    # domain (custom domains need an active shop), only perhaps this host's row from before.
    Domain.objects.bulk_create(
        [Domain(domain=host, **platform_domain)],
        update_conflicts=True,
        unique_fields=["domain"],
        update_fields=[*platform_domain, "updated_at"],
    )
    tenant.set_status(Tenant.Status.ACTIVE)
    audit_record(
        actor=actor,
        action=Action.TENANT_PROVISIONED,
        tenant=tenant,
        target=tenant.subdomain,
        details={"schema": tenant.schema_name, "host": host, "plan": tenant.plan.slug, **(details or {})},
    )
    return host


def _owner_create(tenant: Tenant) -> str:
    """Create the shop owner inside the tenant's own schema; return a one-time set-password link."""
    connection.set_tenant(tenant)
    try:
        # The schema is a spare claimed (or built) in this still-open transaction: it has no
        # users, and no one else can see its tables, so no lookups or savepoints first.
        owner = get_user_model()(username=tenant.owner_email, email=tenant.owner_email)
        owner.set_unusable_password()
        owner.save()
        with connection.cursor() as cursor:
            # The group, made unless a migration already did, and the owner in it: one statement.
            cursor.execute(
                f"WITH owners AS (INSERT INTO {Group._meta.db_table} (name) VALUES (%s) "
                "ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id) "
                f"INSERT INTO {type(owner).groups.through._meta.db_table} (user_id, group_id) "
                "SELECT %s, id FROM owners",
                [OWNER_GROUP, owner.pk],
            )
        return _owner_link(tenant, owner)
    finally:
        connection.set_schema_to_public()


def _owner_link(tenant: Tenant, owner: AbstractBaseUser) -> str:
    uid = urlsafe_base64_encode(force_bytes(owner.pk))
    token = default_token_generator.make_token(owner)
    return tenant_url(platform_host_for(tenant.subdomain), f"/account/set-password/{uid}/{token}/")


def tenant_owner_link(*, tenant: Tenant, actor: Actor) -> str:
    """A fresh one-time set-password link for the owner (staff hand it over; it is not stored)."""
    if tenant.status not in (Tenant.Status.ACTIVE, Tenant.Status.SUSPENDED):
        raise TenantStateError(f"Tenant {tenant.subdomain!r} is {tenant.status}; it has no owner yet.")
    connection.set_tenant(tenant)
    try:
        owner = get_user_model().objects.filter(username=tenant.owner_email).first()
        if owner is None:
            raise TenantStateError(f"Owner {tenant.owner_email} does not exist in {tenant.schema_name}.")
        link = _owner_link(tenant, owner)
    finally:
        connection.set_schema_to_public()
    audit_record(
        actor=actor, action=Action.TENANT_OWNER_LINK_ISSUED, tenant=tenant, target=tenant.owner_email
    )
    return link


def _transition(tenant: Tenant, *, allowed_from: tuple[str, ...], verb: str) -> Tenant:
    connection.set_schema_to_public()
    locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
    if locked.status not in allowed_from:
        raise TenantStateError(
            f"Cannot {verb} {locked.subdomain!r}: it is {locked.status} "
            f"(only {', '.join(allowed_from)} tenants can be {verb}ed)."
        )
    return locked


def tenant_suspend(*, tenant: Tenant, reason: str, actor: Actor) -> Tenant:
    reason = (reason or "").strip()
    if not reason:
        raise TenantValidationError("Give a reason for the suspension (--reason \"unpaid invoice\").")
    with transaction.atomic():
        tenant = _transition(tenant, allowed_from=(Tenant.Status.ACTIVE,), verb="suspend")
        tenant.set_status(Tenant.Status.SUSPENDED, reason)
        audit_record(actor=actor, action=Action.TENANT_SUSPENDED, tenant=tenant, target=tenant.subdomain,
                     details={"reason": reason})
    tenant_routes_forget(tenant)
    return tenant


def tenant_resume(*, tenant: Tenant, actor: Actor) -> Tenant:
    with transaction.atomic():
        tenant = _transition(tenant, allowed_from=(Tenant.Status.SUSPENDED,), verb="resume")
        tenant.set_status(Tenant.Status.ACTIVE)
        audit_record(actor=actor, action=Action.TENANT_RESUMED, tenant=tenant, target=tenant.subdomain)
    tenant_routes_forget(tenant)
    return tenant


def plan_limit_violations(*, tenant: Tenant, plan: Plan) -> list[str]:
    """What the tenant uses beyond ``plan``'s limits, as sentences; empty when it fits."""
    usage = tenant_live_usage(tenant=tenant)
    problems = []
    if usage.products > plan.max_products:
        problems.append(f"{usage.products} products (plan allows {plan.max_products})")
    if usage.custom_domains > plan.max_custom_domains:
        problems.append(
            f"{usage.custom_domains} custom domains (plan allows {plan.max_custom_domains})"
        )
    if usage.schema_bytes > plan.max_storage_mb * 1024 * 1024:
        problems.append(
            f"{usage.schema_bytes / 1024 / 1024:.1f} MB of storage (plan allows {plan.max_storage_mb} MB)"
        )
    return problems


def tenant_change_plan(*, tenant: Tenant, plan: Plan | str, actor: Actor) -> Tenant:
    plan = plan_resolve(plan)
    with transaction.atomic():
        tenant = _transition(
            tenant,
            allowed_from=(Tenant.Status.ACTIVE, Tenant.Status.SUSPENDED),
            verb="change the plan of",
        )
        if tenant.plan_id == plan.pk:
            return tenant
        problems = plan_limit_violations(tenant=tenant, plan=plan)
        if problems:
            raise PlanLimitExceeded(
                f"{tenant.subdomain!r} cannot move to {plan.slug!r}; it uses "
                + "; ".join(problems)
                + ". Reduce usage first or pick a larger plan."
            )
        old = tenant.plan.slug
        tenant.plan = plan
        tenant.save(update_fields=["plan", "updated_at"])
        audit_record(actor=actor, action=Action.TENANT_PLAN_CHANGED, tenant=tenant, target=tenant.subdomain,
                     details={"from": old, "to": plan.slug})
    return tenant


def tenant_deprovision(*, tenant: Tenant, drop_schema: bool, actor: Actor) -> Tenant:
    """Take a shop offline for good: routes removed, schema dropped only when asked."""
    with transaction.atomic():
        tenant = _transition(
            tenant,
            # DEPROVISIONING too: a run that died half-way can be finished by running it again.
            allowed_from=(
                Tenant.Status.ACTIVE, Tenant.Status.SUSPENDED, Tenant.Status.FAILED,
                Tenant.Status.DEPROVISIONING,
            ),
            verb="deprovision",
        )
        previous = (tenant.status, tenant.status_reason)
        tenant.set_status(Tenant.Status.DEPROVISIONING)
    if drop_schema and schema_exists(tenant.schema_name):
        # Receivers may refuse the drop by raising: the backups app keeps a final backup
        # (deleted after BACKUP_FINAL_RETENTION_DAYS); no backup, no drop.
        try:
            schema_pre_drop.send(sender=Tenant, tenant=tenant, actor=actor)
        except Exception as exc:
            tenant.set_status(*previous)
            raise TenantStateError(
                f"The final backup of {tenant.subdomain!r} failed, so nothing was deleted: {exc}"
            ) from exc
    hosts = list(tenant.domains.values_list("domain", flat=True))
    with transaction.atomic():
        tenant.domains.all().delete()
        if drop_schema and schema_exists(tenant.schema_name):
            with connection.cursor() as cursor:
                cursor.execute(f"DROP SCHEMA {quote_schema_name(tenant.schema_name)} CASCADE")
        tenant.set_status(Tenant.Status.DELETED, "schema dropped" if drop_schema else "schema kept")
        audit_record(actor=actor, action=Action.TENANT_DEPROVISIONED, tenant=tenant, target=tenant.subdomain,
                     details={"schema": tenant.schema_name, "schema_dropped": drop_schema, "hosts": hosts})
    routes_forget(*hosts)
    return tenant


def tenant_rename(*, tenant: Tenant, name: str, actor: Actor) -> Tenant:
    """Change the shop's display name (the only detail staff edit directly)."""
    name = (name or "").strip()
    if not name:
        raise TenantValidationError("The shop needs a name; leave the old one rather than a blank.")
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        old = locked.name
        if old == name:
            return locked
        locked.name = name
        locked.save(update_fields=["name", "updated_at"])
        audit_record(actor=actor, action=Action.TENANT_RENAMED, tenant=locked, target=locked.subdomain,
                     details={"from": old, "to": name})
    # Cached routes carry the name (shown on the storefront and the suspended page).
    tenant_routes_forget(locked)
    return locked


PLAN_AUDITED_FIELDS = (
    "name", "slug", "monthly_price", "max_products", "max_custom_domains", "max_storage_mb",
    "backup_retention_days", "backup_frequency", "is_active",
)


def plan_save(*, plan: Plan, actor: Actor) -> Plan:
    """Create or update a plan from staff input, recording what changed."""
    created = plan.pk is None
    before = {} if created else Plan.objects.filter(pk=plan.pk).values(*PLAN_AUDITED_FIELDS).first() or {}
    with transaction.atomic():
        plan.save()
        after = {field: getattr(plan, field) for field in PLAN_AUDITED_FIELDS}
        changes = {
            field: {"from": str(before[field]) if field in before else None, "to": str(value)}
            for field, value in after.items()
            if created or before.get(field) != value
        }
        if created or changes:
            audit_record(actor=actor, action=Action.PLAN_CREATED if created else Action.PLAN_CHANGED,
                         target=plan.slug, details=changes)
    return plan


def plan_delete(*, plan: Plan, actor: Actor) -> None:
    # Deleted tenants keep their row (and plan) for the record, so they count too.
    in_use = plan.tenants.count()
    if in_use:
        raise TenantValidationError(
            f"Plan {plan.slug!r} is referenced by {in_use} tenant(s); untick 'active' to retire "
            "it instead (retired plans are not offered to new tenants)."
        )
    with transaction.atomic():
        slug = plan.slug
        plan.delete()
        audit_record(actor=actor, action=Action.PLAN_DELETED, target=slug)
