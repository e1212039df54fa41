"""Tenants: the list, the detail page, provisioning, and the lifecycle actions.

Admin code stays thin: forms collect input, services validate and write the audit trail, and
slow work goes to RQ jobs that carry the staff user as their actor. Lifecycle fields (status,
subdomain, schema, plan, owner) are read-only here: they change only through audited services.
"""

from datetime import datetime
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Prefetch
from django.http import HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince

from core.admin import ReadOnlyAdminMixin, actor_text, details_text
from core.admin_links import admin_path
from core.audit import Actor
from core.models import AuditEvent
from tenants import jobs, services
from tenants.admin.forms import (
    ChangePlanForm,
    DeprovisionForm,
    ProvisionTenantForm,
    SuspendForm,
    TenantChangeForm,
)
from tenants.errors import TenantError
from tenants.models import Domain, Tenant
from tenants.selectors import product_counts, schema_sizes, schemas_with_products

# Messages list at most this many tenants by name; the rest are counted.
NAMES_SHOWN = 20


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:NAMES_SHOWN])
    return shown + (f" and {len(items) - NAMES_SHOWN} more" if len(items) > NAMES_SHOWN else "")


def _ago(moment: datetime) -> str:
    elapsed = timesince(moment)
    return "just now" if elapsed.startswith("0\xa0minutes") else f"{elapsed} ago"


STATUS_BADGES: dict[str, str] = {
    Tenant.Status.ACTIVE: "ok",
    Tenant.Status.PROVISIONING: "info",
    Tenant.Status.SUSPENDED: "warn",
    Tenant.Status.DEPROVISIONING: "warn",
    Tenant.Status.DELETED: "muted",
    Tenant.Status.FAILED: "error",
}


def status_badge(tenant: Tenant) -> SafeString:
    return format_html(
        '<span class="tenant-badge tenant-badge-{}" title="{}">{}</span>',
        STATUS_BADGES.get(tenant.status, "muted"),
        tenant.status_reason or tenant.get_status_display(),
        tenant.get_status_display(),
    )


class DomainInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Read-only: domain changes go through the domain services (verification, routing cache)."""

    model = Domain
    extra = 0
    can_delete = False
    fields = ("domain", "kind", "status", "is_primary", "created_at")
    readonly_fields = fields
    ordering = ["-is_primary", "-kind", "domain"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["subdomain", "name", "status_badge", "plan", "domain_list", "usage", "created"]
    list_display_links = ["subdomain", "name"]
    list_filter = ["status", "plan"]
    search_fields = ["subdomain", "name", "owner_email", "domains__domain"]
    list_select_related = ["plan"]
    date_hierarchy = "created_at"
    list_per_page = 100
    ordering = ["subdomain"]
    actions = [
        "suspend_tenants", "resume_tenants", "change_plan", "issue_owner_link", "deprovision_tenants",
    ]
    inlines = [DomainInline]
    readonly_fields = [
        "subdomain", "schema_name", "status_badge", "status_reason", "plan", "owner_email",
        "usage_summary", "links", "created_at", "updated_at", "activated_at", "recent_activity",
    ]
    fieldsets = [
        (None, {
            "fields": ["name", "subdomain", "status_badge", "status_reason", "plan", "owner_email",
                       "usage_summary"],
            "description": "Only the name is edited here. Status and plan change through the actions "
            "on the tenants list, so every change is validated and audited.",
        }),
        ("Storage and routing", {"fields": ["schema_name", "links"]}),
        ("Timestamps", {"fields": ["created_at", "activated_at", "updated_at"]}),
        ("Activity", {"fields": ["recent_activity"]}),
    ]
    add_fieldsets = [(None, {"fields": ["subdomain", "name", "plan", "owner_email"]})]

    class Media:
        css = {"all": ["tenants/admin.css"]}

    # -- permissions: one per lifecycle operation (see Tenant.Meta.permissions and core.roles)

    def _has(self, request, codename: str) -> bool:
        return request.user.has_perm(f"tenants.{codename}")

    def has_add_permission(self, request):
        return self._has(request, "provision_tenant")

    def has_delete_permission(self, request, obj=None):
        # A tenant row is never deleted from here: deprovisioning keeps it, marked deleted.
        return False

    def has_suspend_permission(self, request):
        return self._has(request, "suspend_tenant")

    def has_resume_permission(self, request):
        return self._has(request, "resume_tenant")

    def has_change_tenant_plan_permission(self, request):
        # Not "change_plan": that codename is Django's own permission to edit Plan rows.
        return self._has(request, "change_tenant_plan")

    def has_issue_owner_link_permission(self, request):
        return self._has(request, "issue_owner_link")

    def has_deprovision_permission(self, request):
        return self._has(request, "deprovision_tenant")

    # -- list

    def get_queryset(self, request):
        # Domains for the whole page in one query; usage comes from the snapshot columns.
        return super().get_queryset(request).prefetch_related(
            Prefetch("domains", queryset=Domain.objects.only("id", "domain", "tenant_id", "is_primary")
                     .order_by("-is_primary", "-kind", "domain"))
        )

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj):
        return status_badge(obj)

    @admin.display(description="Domains")
    def domain_list(self, obj):
        domains = [d.domain for d in obj.domains.all()]
        return format_html_join(mark_safe("<br>"), "{}", ((d,) for d in domains)) if domains else "-"

    @admin.display(description="Usage", ordering="product_count")
    def usage(self, obj):
        if obj.usage_refreshed_at is None:
            return format_html('<span class="tenant-quiet">{}</span>', "not measured yet")
        return format_html(
            '{} products<br>{}<br><span class="tenant-quiet" title="{}">as of {}</span>',
            obj.product_count, filesizeformat(obj.schema_bytes),
            obj.usage_refreshed_at.isoformat(timespec="seconds"), _ago(obj.usage_refreshed_at),
        )

    @admin.display(description="Created", ordering="created_at")
    def created(self, obj):
        return obj.created_at.strftime("%Y-%m-%d")

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"title": "Tenants", **(extra_context or {})})

    # -- detail

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            actor = Actor.staff(request.user)
            return type("ProvisionTenantForm", (ProvisionTenantForm,), {"actor": actor})
        kwargs["form"] = TenantChangeForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def get_inlines(self, request, obj):
        return [] if obj is None else self.inlines

    def add_view(self, request, form_url="", extra_context=None):
        extra_context = {
            "title": "Provision tenant", "show_save_and_add_another": False,
            "show_save_and_continue": False, **(extra_context or {}),
        }
        return super().add_view(request, form_url, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {"show_save_and_add_another": False, **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        actor = Actor.staff(request.user)
        if not change:
            # The form's service call recorded the tenant; the schema is built by the worker.
            jobs.provision_tenant_job.delay(str(obj.pk), *actor.job_args)
            return
        if "name" in form.changed_data:
            services.tenant_rename(tenant=obj, name=form.cleaned_data["name"], actor=actor)

    def response_add(self, request, obj, post_url_continue=None):
        if "_popup" in request.POST:
            return super().response_add(request, obj, post_url_continue)
        self.message_user(
            request,
            f"Tenant {obj.subdomain} recorded; provisioning is queued. Its status turns Active "
            "when the worker has built the shop.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(admin_path(obj))

    @admin.display(description="Usage")
    def usage_summary(self, obj):
        if obj.usage_refreshed_at is None:
            return "Not measured yet (the usage job runs periodically)."
        return format_html(
            "{} products, {} of storage (as of {}, {})",
            obj.product_count, filesizeformat(obj.schema_bytes),
            obj.usage_refreshed_at.strftime("%Y-%m-%d %H:%M UTC"), _ago(obj.usage_refreshed_at),
        )

    @admin.display(description="Links")
    def links(self, obj):
        audit_url = admin_path(AuditEvent, "changelist") + "?" + urlencode(
            {"tenant_label": obj.subdomain}
        )
        parts = [format_html('<a href="{}">Full audit trail</a>', audit_url)]
        if obj.status == Tenant.Status.ACTIVE:
            shop = services.tenant_url(services.platform_host_for(obj.subdomain))
            parts.insert(0, format_html('<a href="{}" target="_blank" rel="noopener">Open shop</a>', shop))
        return format_html_join(" · ", "{}", ((p,) for p in parts))

    @admin.display(description="Last 15 events")
    def recent_activity(self, obj):
        events = list(obj.audit_events.order_by("-created_at", "-id")[:15])
        if not events:
            return "No audit events yet."
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    admin_path(e),
                    e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    e.action,
                    actor_text(e.actor),
                    details_text(e.details),
                )
                for e in events
            ),
        )
        return format_html(
            '<table class="tenant-activity"><thead><tr><th>When (UTC)</th><th>Action</th>'
            "<th>Actor</th><th>Details</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    # -- actions

    def _action_page(self, request, *, action: str, title: str, eligible, skipped: list[str], form,
                     intro: str = "", warning: str = "", columns=None, rows=None,
                     submit_label: str = "Confirm", danger: bool = False):
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "action": action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "eligible": eligible,
            "skipped": skipped,
            "form": form,
            "intro": intro,
            "warning": warning,
            "columns": columns or ["Subdomain", "Name", "Status", "Plan"],
            "rows": rows if rows is not None else [
                (t.subdomain, t.name, status_badge(t), t.plan.name) for t in eligible
            ],
            "submit_label": submit_label,
            "danger": danger,
            "changelist_url": admin_path(Tenant, "changelist"),
            "media": self.media,
        }
        return TemplateResponse(request, "admin/tenants/tenant/action_confirmation.html", context)

    @staticmethod
    def _split(queryset, allowed: tuple[str, ...]):
        tenants = list(queryset.select_related("plan").order_by("subdomain"))
        eligible = [t for t in tenants if t.status in allowed]
        skipped = [f"{t.subdomain} ({t.status})" for t in tenants if t.status not in allowed]
        return eligible, skipped

    def _report_skipped(self, request, skipped: list[str], why: str) -> None:
        if skipped:
            self.message_user(request, f"Skipped {len(skipped)} tenant(s) {why}: {_names(skipped)}.",
                              messages.WARNING)

    @admin.action(description="Suspend selected tenants…", permissions=["suspend"])
    def suspend_tenants(self, request, queryset):
        eligible, skipped = self._split(queryset, (Tenant.Status.ACTIVE,))
        form = SuspendForm(request.POST if "apply" in request.POST else None)
        if eligible and form.is_bound and form.is_valid():
            actor = Actor.staff(request.user)
            for tenant in eligible:
                jobs.suspend_tenant_job.delay(str(tenant.pk), form.cleaned_data["reason"], *actor.job_args)
            self.message_user(request, f"{len(eligible)} tenant(s) queued for suspension.", messages.SUCCESS)
            self._report_skipped(request, skipped, "that are not active")
            return None
        return self._action_page(
            request, action="suspend_tenants", title="Suspend tenants", eligible=eligible,
            skipped=skipped, form=form, submit_label="Suspend",
            intro="These shops will answer with a 'suspended' page (HTTP 503) until resumed. "
            "Their data is kept.",
        )

    @admin.action(description="Resume selected tenants", permissions=["resume"])
    def resume_tenants(self, request, queryset):
        eligible, skipped = self._split(queryset, (Tenant.Status.SUSPENDED,))
        actor = Actor.staff(request.user)
        for tenant in eligible:
            jobs.resume_tenant_job.delay(str(tenant.pk), *actor.job_args)
        self.message_user(request, f"{len(eligible)} tenant(s) queued for resumption.",
                          messages.SUCCESS if eligible else messages.WARNING)
        self._report_skipped(request, skipped, "that are not suspended")

    @admin.action(description="Change plan of selected tenants…", permissions=["change_tenant_plan"])
    def change_plan(self, request, queryset):
        eligible, skipped = self._split(queryset, (Tenant.Status.ACTIVE, Tenant.Status.SUSPENDED))
        form = ChangePlanForm(request.POST if "apply" in request.POST else None)
        if eligible and form.is_bound and form.is_valid():
            plan = form.cleaned_data["plan"]
            actor = Actor.staff(request.user)
            queued, unchanged, refused = [], [], []
            for tenant in eligible:
                if tenant.plan_id == plan.pk:
                    unchanged.append(tenant.subdomain)
                    continue
                # Checked now so staff see refusals at once; the job checks again under a lock.
                problems = services.plan_limit_violations(tenant=tenant, plan=plan)
                if problems:
                    refused.append(f"{tenant.subdomain} uses {'; '.join(problems)}")
                    continue
                jobs.change_plan_job.delay(str(tenant.pk), plan.slug, *actor.job_args)
                queued.append(tenant.subdomain)
            self.message_user(request, f"{len(queued)} tenant(s) queued for a move to {plan.name}.",
                              messages.SUCCESS if queued else messages.WARNING)
            if refused:
                self.message_user(
                    request,
                    f"{len(refused)} tenant(s) not moved: they exceed {plan.name}'s limits. "
                    + " | ".join(refused[:NAMES_SHOWN]) + ". Reduce their usage or pick a larger plan.",
                    messages.ERROR,
                )
            if unchanged:
                self.message_user(request, f"Already on {plan.name}: {_names(unchanged)}.", messages.INFO)
            self._report_skipped(request, skipped, "that are neither active nor suspended")
            return None
        return self._action_page(
            request, action="change_plan", title="Change plan", eligible=eligible, skipped=skipped,
            form=form, submit_label="Change plan",
            columns=["Subdomain", "Name", "Status", "Current plan", "Products (snapshot)"],
            rows=[(t.subdomain, t.name, status_badge(t), t.plan.name, t.product_count) for t in eligible],
        )

    @admin.action(description="Issue owner set-password link", permissions=["issue_owner_link"])
    def issue_owner_link(self, request, queryset):
        eligible, skipped = self._split(queryset, (Tenant.Status.ACTIVE, Tenant.Status.SUSPENDED))
        actor = Actor.staff(request.user)
        links, failed = [], []
        for tenant in eligible:
            try:
                links.append((tenant, services.tenant_owner_link(tenant=tenant, actor=actor)))
            except TenantError as exc:
                failed.append(str(exc))
        # Rendered straight into this response, never stored (not even in a message cookie).
        context = {
            **self.admin_site.each_context(request),
            "title": "Owner set-password links",
            "opts": self.opts,
            "links": links,
            "failed": failed,
            "skipped": skipped,
            "changelist_url": admin_path(Tenant, "changelist"),
        }
        response = TemplateResponse(request, "admin/tenants/tenant/owner_links.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Deprovision selected tenants (drops their data)…",
                  permissions=["deprovision"])
    def deprovision_tenants(self, request, queryset):
        allowed = (Tenant.Status.ACTIVE, Tenant.Status.SUSPENDED, Tenant.Status.FAILED)
        eligible, skipped = self._split(queryset, allowed)
        form = DeprovisionForm(request.POST if "apply" in request.POST else None,
                               subdomains=[t.subdomain for t in eligible])
        if eligible and form.is_bound and form.is_valid():
            actor = Actor.staff(request.user)
            for tenant in eligible:
                jobs.deprovision_tenant_job.delay(str(tenant.pk), True, *actor.job_args)
            self.message_user(request, f"{len(eligible)} tenant(s) queued for deprovisioning.",
                              messages.SUCCESS)
            self._report_skipped(request, skipped, "that cannot be deprovisioned")
            return None
        # Live figures, so the page names exactly what will be lost.
        names = [t.schema_name for t in eligible]
        countable = schemas_with_products(names)
        counts = product_counts(sorted(countable))
        sizes = schema_sizes(names)
        rows = [
            (
                t.subdomain, t.name, status_badge(t), t.schema_name,
                counts[t.schema_name] if t.schema_name in countable else "no schema",
                filesizeformat(sizes[t.schema_name]) if t.schema_name in sizes else "-",
            )
            for t in eligible
        ]
        return self._action_page(
            request, action="deprovision_tenants", title="Deprovision tenants", eligible=eligible,
            skipped=skipped, form=form, danger=True, submit_label="Deprovision and drop schemas",
            columns=["Subdomain", "Name", "Status", "Schema", "Products", "Schema size"], rows=rows,
            warning=f"This takes {len(eligible)} shop(s) offline for good and DROPS each schema "
            "listed below with all its data (products, users, orders). It cannot be undone from "
            "here; restore from a backup if needed.",
        )
