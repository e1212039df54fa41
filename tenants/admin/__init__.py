"""The staff console for tenancy: plans, tenants (with their lifecycle actions), the schema pool,
the operators-only job dashboard, and custom domains. The audit log's admin is in core.admin.

Importing a module registers its admin; the order here is only for reading.
"""

from django.contrib import admin

from tenants.admin import plans, pool, rq, tenants
from tenants.admin.tenants import TenantAdmin  # backups.admin adds its tenant actions to it
from tenants.domains import admin as domains_admin

admin.site.site_header = "Platform control plane"
admin.site.site_title = "Control plane"
admin.site.index_title = "Staff console"

__all__ = ["TenantAdmin", "domains_admin", "plans", "pool", "rq", "tenants"]
