"""The audit log's admin, and admin pieces every app shares."""

import re

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from core.admin_links import admin_path
from core.models import AuditEvent


class ReadOnlyAdminMixin:
    """Rows written only by services or jobs: staff may look, never add, edit or delete here."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


JOB_ACTOR = re.compile(r"^job (?P<job>\S+) for (?P<who>.+)$")


def actor_text(actor: str) -> str:
    """'job 5324ac63-... for staff:olivia' reads as 'staff:olivia via job 5324ac63'."""
    match = JOB_ACTOR.match(actor)
    return f"{match['who']} via job {match['job'][:8]}" if match else actor


def _value_text(value) -> str:
    # Lists read as "a, b" and None as "none", not as Python reprs (['a', 'b'], None).
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return ", ".join(_value_text(v) for v in value) or "none"
    if isinstance(value, dict):
        return "{" + details_text(value) + "}"
    return str(value)


def details_text(details: dict) -> str:
    return ", ".join(f"{key}={_value_text(value)}" for key, value in (details or {}).items())[:200]


class TenantSubdomainFilter(admin.ListFilter):
    """A text box rather than a list: there may be thousands of tenants."""

    title = "tenant"
    parameter_name = "tenant_label"
    template = "admin/tenants/input_filter.html"

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        value = params.pop(self.parameter_name, "")
        self.value = (value[-1] if isinstance(value, list) else value).strip().lower()
        if self.value:
            self.used_parameters[self.parameter_name] = self.value

    def has_output(self):
        return True

    def expected_parameters(self):
        return [self.parameter_name]

    def queryset(self, request, queryset):
        return queryset.filter(tenant_label=self.value) if self.value else queryset

    def choices(self, changelist):
        others = [
            (key, value)
            for key, values in changelist.filter_params.items()
            if key != self.parameter_name
            for value in values
        ]
        yield {
            "value": self.value,
            "parameter_name": self.parameter_name,
            "hidden": others,
            "clear_url": changelist.get_query_string(remove=[self.parameter_name]),
        }


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only for everyone, superusers included: the trail is evidence."""

    # Target is left to the detail page and search: it mostly repeats the tenant.
    list_display = ["when", "actor_short", "action", "tenant_link", "details_short"]
    list_filter = ["action", "actor_type", TenantSubdomainFilter, "created_at"]
    search_fields = ["actor", "action", "target", "tenant_label", "details"]
    date_hierarchy = "created_at"
    list_per_page = 100
    show_full_result_count = False
    actions = None
    fields = ("created_at", "actor_type", "actor", "action", "tenant_link", "target", "details_pretty")
    readonly_fields = fields

    class Media:
        css = {"all": ["tenants/admin.css"]}

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"title": "Audit log", **(extra_context or {})})

    @admin.display(description="When (UTC)", ordering="created_at")
    def when(self, obj):
        return obj.created_at.strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="Actor", ordering="actor")
    def actor_short(self, obj):
        return format_html('<span title="{}">{}</span>', obj.actor, actor_text(obj.actor))

    @admin.display(description="Tenant", ordering="tenant_label")
    def tenant_link(self, obj):
        if obj.tenant_id is None:
            return obj.tenant_label or "-"
        url = admin_path(obj._meta.get_field("tenant").related_model, pk=obj.tenant_id)
        return format_html('<a href="{}">{}</a>', url, obj.tenant_label)

    @admin.display(description="Details")
    def details_short(self, obj):
        return details_text(obj.details)

    @admin.display(description="Details")
    def details_pretty(self, obj):
        return format_html_join(
            "", "<div><strong>{}</strong>: {}</div>", sorted((obj.details or {}).items())
        ) or "-"
