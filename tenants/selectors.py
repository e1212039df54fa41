"""Read-side queries about tenants. No side effects."""

import uuid
from dataclasses import dataclass

from django_tenants.utils import quote_schema_name

from core.admin_links import admin_path
from core.db import connection
from core.facts import CertificateFact
from tenants.models import Certificate, Domain, PlatformCertificate, Tenant


@dataclass(frozen=True)
class TenantUsage:
    products: int
    custom_domains: int
    schema_bytes: int


@dataclass(frozen=True)
class ProvisionClashes:
    tenant_id: uuid.UUID | None  # the tenant already holding the subdomain
    host_taken: bool
    schema_exists: bool


def provision_clashes(*, subdomain: str, host: str, schema_name: str) -> ProvisionClashes:
    """What a new shop's subdomain, platform host and schema name would clash with, in one query
    (a signup's checks cost one round trip, not three)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT id FROM {Tenant._meta.db_table} WHERE subdomain = %s), "
            f"EXISTS (SELECT 1 FROM {Domain._meta.db_table} WHERE domain = %s), "
            "EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s)",
            [subdomain, host, schema_name],
        )
        tenant_id, host_taken, exists = cursor.fetchone()
    return ProvisionClashes(tenant_id, host_taken, exists)


def schema_sizes(schema_names: list[str]) -> dict[str, int]:
    """Bytes used by each schema (tables, indexes, TOAST), in one query."""
    if not schema_names:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT n.nspname, coalesce(sum(pg_total_relation_size(c.oid)), 0)
            FROM pg_namespace n LEFT JOIN pg_class c
              ON c.relnamespace = n.oid AND c.relkind IN ('r', 'm', 'p')
            WHERE n.nspname = ANY(%s) GROUP BY n.nspname
            """,
            [schema_names],
        )
        return {name: int(size) for name, size in cursor.fetchall()}


def product_counts(schema_names: list[str]) -> dict[str, int]:
    """Exact product counts for many schemas in one round trip."""
    with connection.cursor() as cursor:
        # Only schemas that exist: a tenant row can outlive or predate its schema.
        cursor.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) "
            "AND to_regclass(quote_ident(nspname) || '.storefront_product') IS NOT NULL",
            [schema_names],
        )
        schema_names = [name for (name,) in cursor.fetchall()]
    if not schema_names:
        return {}
    parts = [
        f"SELECT %s, count(*) FROM {quote_schema_name(name)}.storefront_product" for name in schema_names
    ]
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), schema_names)
        return {name: int(count) for name, count in cursor.fetchall()}


def tenant_live_usage(*, tenant: Tenant) -> TenantUsage:
    return TenantUsage(
        products=product_counts([tenant.schema_name]).get(tenant.schema_name, 0),
        custom_domains=Domain.objects.filter(tenant=tenant, kind=Domain.Kind.CUSTOM)
        .exclude(status=Domain.Status.DISABLED)
        .count(),
        schema_bytes=schema_sizes([tenant.schema_name]).get(tenant.schema_name, 0),
    )


def tenants_with_schema() -> list[Tenant]:
    return list(
        Tenant.objects.filter(status__in=(Tenant.Status.ACTIVE, Tenant.Status.SUSPENDED)).only(
            "id", "schema_name"
        )
    )


def schemas_with_products(schema_names: list[str]) -> set[str]:
    """Which of these schemas exist and hold a product table (safe to count), in one query."""
    if not schema_names:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) "
            "AND to_regclass(quote_ident(nspname) || '.storefront_product') IS NOT NULL",
            [schema_names],
        )
        return {name for (name,) in cursor.fetchall()}


def certificate_facts() -> list[CertificateFact]:
    """Issued certificates of custom domains with their expiry, for the monitoring rules."""
    issued = Certificate.objects.filter(status=Certificate.Status.ISSUED, not_after__isnull=False)
    facts = []
    for c in issued.select_related("domain"):
        assert c.not_after is not None  # filtered on not_after__isnull=False
        facts.append(
            CertificateFact(
                str(c.domain.tenant_id), c.domain.domain, c.not_after,
                link=admin_path(Domain, pk=c.domain_id),
            )
        )
    # The platform wildcard: its expiry alerts through the same rule (no tenant: it serves them all).
    wildcards = PlatformCertificate.objects.filter(status=PlatformCertificate.Status.ISSUED,
                                                   not_after__isnull=False)
    for w in wildcards:
        assert w.not_after is not None  # filtered on not_after__isnull=False
        link = admin_path(PlatformCertificate, pk=w.pk)
        facts.append(CertificateFact(None, str(w), w.not_after, link=link))
    return facts
