"""The usage snapshot shown in the admin (products, schema size), refreshed in batches."""

from django.utils import timezone

from core.db import connection
from tenants.models import Tenant
from tenants.selectors import product_counts, schema_sizes, tenants_with_schema

BATCH = 200


def usage_refresh(*, tenants: list[Tenant] | None = None) -> int:
    connection.set_schema_to_public()
    tenants = tenants if tenants is not None else tenants_with_schema()
    now = timezone.now()
    for start in range(0, len(tenants), BATCH):
        batch = tenants[start : start + BATCH]
        names = [t.schema_name for t in batch]
        counts, sizes = product_counts(names), schema_sizes(names)
        for tenant in batch:
            tenant.product_count = counts.get(tenant.schema_name, 0)
            tenant.schema_bytes = sizes.get(tenant.schema_name, 0)
            tenant.usage_refreshed_at = now
        Tenant.objects.bulk_update(batch, ["product_count", "schema_bytes", "usage_refreshed_at"])
    return len(tenants)
