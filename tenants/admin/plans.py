"""Plans: ordinary rows staff edit, saved and deleted through the audited plan services."""

from django.contrib import admin
from django.db.models import Count

from core.audit import Actor
from tenants import services
from tenants.models import Plan


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = [
        "name", "slug", "monthly_price", "max_products", "max_custom_domains", "max_storage_mb",
        "backup_retention_days", "backup_frequency", "is_active", "tenant_count",
    ]
    list_filter = ["is_active", "backup_frequency"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_tenant_count=Count("tenants"))

    @admin.display(description="Tenants", ordering="_tenant_count")
    def tenant_count(self, obj):
        return obj._tenant_count

    def save_model(self, request, obj, form, change):
        services.plan_save(plan=obj, actor=Actor.staff(request.user))

    def delete_model(self, request, obj):
        services.plan_delete(plan=obj, actor=Actor.staff(request.user))

    def delete_queryset(self, request, queryset):
        for plan in queryset:
            services.plan_delete(plan=plan, actor=Actor.staff(request.user))
