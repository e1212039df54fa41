from django.contrib import admin

from tenants.models import AuditEvent, Domain, Plan, SchemaPoolEntry, Tenant


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "monthly_price", "max_products", "max_custom_domains", "is_active"]
    prepopulated_fields = {"slug": ["name"]}


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0
    fields = ["domain", "kind", "status", "is_primary"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["subdomain", "name", "status", "plan", "product_count", "created_at"]
    list_filter = ["status", "plan"]
    search_fields = ["subdomain", "name", "owner_email"]
    list_select_related = ["plan"]
    inlines = [DomainInline]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor", "action", "tenant_label", "target"]
    list_filter = ["action", "actor_type"]


admin.site.register(SchemaPoolEntry)

from tenants import admin_domains  # noqa: E402,F401  custom domains admin
