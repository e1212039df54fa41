"""The schema pool: spares are built and reaped by the pool jobs, so staff only look."""

from django.contrib import admin

from core.admin import ReadOnlyAdminMixin
from tenants.models import SchemaPoolEntry


@admin.register(SchemaPoolEntry)
class SchemaPoolEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["schema_name", "status", "created_at"]
    list_filter = ["status"]
