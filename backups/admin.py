"""Backups console: list with status and RPO, back up now, restore behind a typed confirmation,
short-lived download links, drill history, PITR status. Actions enqueue jobs; views stay thin."""

import json
from typing import TYPE_CHECKING, Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from backups import jobs
from backups.admin_offsite import DrillColumnsMixin, OffsiteCopyInline, offsite_summary
from backups.errors import BackupError
from backups.management.commands._progress import human_bytes
from backups.models import Backup, Export, Restore, RestoreDrill
from backups.selectors import pitr_status, rpo_breached
from backups.services.exports import export_create
from backups.services.restore import restore_as_new_check, restore_in_place_check
from backups.services.runs import backup_create
from backups.storage import LocalStorage, backup_storage
from core.admin import ReadOnlyAdminMixin
from core.audit import Action, Actor, audit_record
from tenants.admin import TenantAdmin
from tenants.models import Tenant

if TYPE_CHECKING:
    # A mixin for ModelAdmin subclasses: it uses their model, admin_site and get_urls().
    _ModelAdminMixin = admin.ModelAdmin[Any]
else:
    _ModelAdminMixin = object


class ShortLivedDownloads(_ModelAdminMixin):
    """``<pk>/download/`` redirects to a short-lived link: presigned for S3, or for the local
    folder ``<pk>/file/?token=`` signed by us, served to whoever holds it (it was issued to a
    permitted user; a bad or expired token is a 404). Backups and exports both hold a shop's data:
    ``backups.download_backup`` downloads either. Platform and whole-database backups also hold the
    staff accounts' password hashes: they need ``backups.download_platform_backup``, which no role
    has (core.roles.SUPERUSER_ONLY). Each link issued is audited."""

    download_salt: str
    download_action: Action
    downloadable: dict  # which rows may be downloaded

    def download_filename(self, obj) -> str:
        raise NotImplementedError

    def download_permission(self, obj) -> str:
        return "backups.download_backup"

    def get_list_display(self, request):
        # The "links" column is made for this user: no link they would only get a 403 for.
        user = request.user
        shown = super().get_list_display(request)
        return [self.links_for(user) if name == "links" else name for name in shown]

    def links_for(self, user):
        raise NotImplementedError

    @admin.display(description="")
    def links(self, obj) -> str:
        return ""  # a placeholder for the system checks: get_list_display puts links_for(user) here

    def _url_name(self, what: str) -> str:
        return f"{self.model._meta.app_label}_{self.model._meta.model_name}_{what}"

    def get_urls(self):
        view = self.admin_site.admin_view
        own = [
            path("<uuid:pk>/download/", view(self.download_view), name=self._url_name("download")),
            path("<uuid:pk>/file/", view(self.file_view), name=self._url_name("file")),
        ]
        return own + super().get_urls()

    def download_view(self, request, pk):
        if not request.user.has_perm("backups.download_backup"):
            raise PermissionDenied
        obj = get_object_or_404(self.model, pk=pk, **self.downloadable)
        if not request.user.has_perm(self.download_permission(obj)):
            raise PermissionDenied(f"Downloading this needs {self.download_permission(obj)}.")
        seconds = settings.BACKUP_DOWNLOAD_LINK_SECONDS
        url = backup_storage().download_url(obj.location, expires=seconds)
        if url is None:
            token = signing.TimestampSigner(salt=self.download_salt).sign(str(obj.pk))
            url = reverse(f"admin:{self._url_name('file')}", args=[obj.pk]) + f"?token={token}"
        audit_record(
            actor=Actor.staff(request.user),
            action=self.download_action,
            tenant=obj.tenant,
            target=str(obj.pk),
            details={"expires_in": seconds},
        )
        return HttpResponseRedirect(url)

    def file_view(self, request, pk):
        try:
            value = signing.TimestampSigner(salt=self.download_salt).unsign(
                request.GET.get("token", ""), max_age=settings.BACKUP_DOWNLOAD_LINK_SECONDS
            )
        except signing.BadSignature:
            raise Http404("This download link is invalid or has expired; ask for a new one.") from None
        if value != str(pk):
            raise Http404
        obj = get_object_or_404(self.model, pk=pk)
        storage = backup_storage()
        if not isinstance(storage, LocalStorage):
            raise Http404
        return FileResponse(
            open(storage._path(obj.location), "rb"),  # FileResponse closes it
            as_attachment=True,
            filename=self.download_filename(obj),
        )


def _age(when) -> str:
    return "-" if when is None else _span((timezone.now() - when).total_seconds())


def _age_until(when) -> str:
    return "-" if when is None else _span((when - timezone.now()).total_seconds())


def _span(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


class RestoreForm(forms.Form):
    mode = forms.ChoiceField(choices=Restore.Mode.choices, widget=forms.RadioSelect, initial="in_place")
    new_subdomain = forms.CharField(required=False, help_text="For a restore as a new tenant")
    confirm = forms.CharField(required=False, help_text="Type the tenant's subdomain to confirm")


@admin.register(Backup)
class BackupAdmin(ShortLivedDownloads, admin.ModelAdmin):
    download_salt = "backups.download"
    download_action = Action.BACKUP_LINK_ISSUED
    downloadable = {"status": Backup.Status.VERIFIED}
    list_display = [
        "created_at",
        "kind",
        "tenant_label",
        "purpose",
        "status_badge",
        "size",
        "duration",
        "age",
        "checksum",
        "where",
        "links",
    ]
    list_filter = ["status", "kind", "purpose", "storage"]
    search_fields = ["tenant_label", "id", "sha256"]
    actions = ["verify_selected", "drill_selected"]
    inlines = [OffsiteCopyInline]  # where its off-site copy is (backups/admin_offsite.py)
    readonly_fields = [f.name for f in Backup._meta.fields if f.name != "manifest"] + ["manifest_view"]
    exclude = ["manifest"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        colour = {"verified": "green", "failed": "#ba2121"}.get(obj.status, "#996800")
        title = obj.status_reason or ""
        return format_html('<b style="color:{}" title="{}">{}</b>', colour, title, obj.status)

    @admin.display(description="size", ordering="size_bytes")
    def size(self, obj):
        return human_bytes(obj.size_bytes) if obj.size_bytes else "-"

    @admin.display(description="duration")
    def duration(self, obj):
        return f"{obj.duration_seconds:.1f} s" if obj.duration_seconds is not None else "-"

    @admin.display(description="age", ordering="created_at")
    def age(self, obj):
        return _age(obj.created_at)

    @admin.display(description="sha256")
    def checksum(self, obj):
        return obj.sha256[:12]

    @admin.display(description="stored in")
    def where(self, obj):
        return f"{obj.storage}:{obj.location}" if obj.location else "-"

    def links_for(self, user):
        may_download, may_restore = (
            user.has_perm("backups.download_backup"), user.has_perm("backups.restore_backup")
        )

        @admin.display(description="")
        def links(obj):
            # The views check the same permissions; these only spare a click that ends in a 403.
            if obj.status != Backup.Status.VERIFIED:
                return ""
            parts = []
            if may_download and user.has_perm(self.download_permission(obj)):
                parts.append((reverse("admin:backups_backup_download", args=[obj.pk]), "download"))
            if obj.kind == Backup.Kind.TENANT and may_restore:
                parts.append((reverse("admin:backups_backup_restore", args=[obj.pk]), "restore..."))
            return format_html_join(" | ", '<a href="{}">{}</a>', parts)

        return links

    @admin.display(description="manifest")
    def manifest_view(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.manifest, indent=2))

    def changelist_view(self, request, extra_context=None):
        tenants = Tenant.objects.filter(status=Tenant.Status.ACTIVE).select_related("plan")
        breached = [t for t in tenants if rpo_breached(t)]
        extra_context = {
            **(extra_context or {}),
            "pitr": pitr_status(),
            "rpo_breached": breached[:50],
            "rpo_breached_count": len(breached),
            "storage_label": _storage_label(),
            "recent_drills": RestoreDrill.objects.all()[:5],
            "offsite": offsite_summary(),
            "pitr_archive": pitr_dashboard(),  # the continuous archive (backups/pitr/admin.py)
        }
        return super().changelist_view(request, extra_context)

    def has_verify_backup_permission(self, request) -> bool:
        return request.user.has_perm("backups.verify_backup")

    def has_run_restore_drill_permission(self, request) -> bool:
        return request.user.has_perm("backups.run_restore_drill")

    @admin.action(
        description="Verify selected backups (read back, compare sha256)", permissions=["verify_backup"]
    )
    def verify_selected(self, request, queryset):
        count = _enqueue_each(request, queryset, jobs.backup_verify_job)
        self.message_user(request, f"{count} backup(s) queued for verification")

    @admin.action(description="Run a restore drill on selected backups", permissions=["run_restore_drill"])
    def drill_selected(self, request, queryset):
        count = _enqueue_each(request, queryset, jobs.restore_drill_one_job)
        self.message_user(request, f"{count} backup(s) queued for a restore drill")

    def get_urls(self):
        own = [
            path(
                "<uuid:pk>/restore/",
                self.admin_site.admin_view(self.restore_view),
                name="backups_backup_restore",
            ),
        ]
        return own + super().get_urls()

    def restore_view(self, request, pk):
        if not request.user.has_perm("backups.restore_backup"):
            raise PermissionDenied
        backup = get_object_or_404(Backup.objects.select_related("tenant"), pk=pk)
        tenant = backup.tenant
        form = RestoreForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            actor = Actor.staff(request.user)
            try:
                if form.cleaned_data["mode"] == Restore.Mode.IN_PLACE:
                    if tenant is None:
                        raise BackupError(
                            "This backup's tenant no longer exists; restore it as a new tenant."
                        )
                    restore_in_place_check(
                        tenant=tenant, backup_id=backup.pk, confirm=form.cleaned_data["confirm"]
                    )
                    jobs.restore_in_place_job.delay(
                        str(tenant.pk), str(backup.pk), form.cleaned_data["confirm"], *actor.job_args
                    )
                    self.message_user(
                        request,
                        f"Restore of {tenant.subdomain} from {backup.pk} queued "
                        "(a safety backup is taken first)",
                    )
                else:
                    _, subdomain = restore_as_new_check(
                        backup_id=backup.pk, subdomain=form.cleaned_data["new_subdomain"]
                    )
                    if form.cleaned_data["confirm"].strip() != subdomain:
                        raise BackupError(f"Type the new subdomain ({subdomain}) to confirm.")
                    jobs.restore_as_new_job.delay(str(backup.pk), subdomain, *actor.job_args)
                    self.message_user(request, f"Restore of {backup.pk} as new tenant {subdomain} queued")
                return redirect("admin:backups_backup_changelist")
            except BackupError as exc:
                form.add_error(None, str(exc))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Restore {tenant.subdomain if tenant else backup.tenant_label}",
            "backup": backup,
            "tenant": tenant,
            "form": form,
            "opts": self.model._meta,
            "products": backup.manifest.get("tables", {})
            .get(backup.schema_name, {})
            .get("storefront_product"),
        }
        return render(request, "admin/backups/backup/restore_confirm.html", context)

    def download_filename(self, obj) -> str:
        return f"{obj.tenant_label or obj.kind}-{obj.pk}.dump"

    def download_permission(self, obj) -> str:
        if obj.kind == Backup.Kind.TENANT:
            return "backups.download_backup"
        return "backups.download_platform_backup"


def _enqueue_each(request, queryset, job) -> int:
    actor = Actor.staff(request.user)
    for obj in queryset:
        job.delay(str(obj.pk), *actor.job_args)
    return len(queryset)


def _storage_label() -> str:
    try:
        return backup_storage().describe()
    except BackupError as exc:
        return f"misconfigured: {exc}"


@admin.register(RestoreDrill)
class RestoreDrillAdmin(DrillColumnsMixin, admin.ModelAdmin):
    list_display = ["started_at", "backup_label", "result", "rto", "reason"]
    list_filter = ["passed"]
    readonly_fields = [
        "backup",
        "backup_label",
        "started_at",
        "finished_at",
        "passed",
        "rto_seconds",
        "reason",
        "checks_view",
    ]
    exclude = ["checks"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="checks")
    def checks_view(self, obj):
        return format_html_join(
            "",
            "<div>{} <b>{}</b>: {}</div>",
            (("✔" if c["ok"] else "✘", c["check"], c["detail"]) for c in obj.checks),
        )


@admin.register(Restore)
class RestoreAdmin(admin.ModelAdmin):
    list_display = [
        "started_at",
        "tenant",
        "mode",
        "target_subdomain",
        "status",
        "duration_seconds",
        "status_reason",
    ]
    list_filter = ["status", "mode"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Export)
class ExportAdmin(ShortLivedDownloads, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: exports are made by export_create and deleted by retention, object and row."""

    download_salt = "backups.export-download"
    download_action = Action.EXPORT_LINK_ISSUED
    downloadable = {"status": Export.Status.READY}
    list_display = [
        "created_at",
        "tenant_label",
        "status_badge",
        "progress",
        "size",
        "rows",
        "expires",
        "links",
    ]
    list_filter = ["status"]
    search_fields = ["tenant_label", "id", "sha256"]
    readonly_fields = [f.name for f in Export._meta.fields]

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        colour = {"ready": "green", "failed": "#ba2121"}.get(obj.status, "#996800")
        return format_html('<b style="color:{}" title="{}">{}</b>', colour, obj.status_reason, obj.status)

    @admin.display(description="progress")
    def progress(self, obj):
        if obj.status == Export.Status.QUEUED:
            return "waiting for a worker"
        return f"{obj.tables_done} of {obj.tables_total} tables" if obj.tables_total else "-"

    @admin.display(description="size", ordering="size_bytes")
    def size(self, obj):
        return human_bytes(obj.size_bytes) if obj.size_bytes else "-"

    @admin.display(description="rows")
    def rows(self, obj):
        return sum(obj.tables.values()) if obj.tables else "-"

    @admin.display(description="deleted in", ordering="expires_at")
    def expires(self, obj):
        return _age_until(obj.expires_at)

    def links_for(self, user):
        may_download = user.has_perm("backups.download_backup")

        @admin.display(description="")
        def links(obj):
            if obj.status != Export.Status.READY or not may_download:
                return ""
            url = reverse("admin:backups_export_download", args=[obj.pk])
            return format_html('<a href="{}">download</a>', url)

        return links

    def download_filename(self, obj) -> str:
        return f"{obj.tenant_label}-export-{obj.created_at:%Y%m%dT%H%M%SZ}.tar.gz"


def _queue_for_each(modeladmin, request, queryset, create, done: str) -> None:
    """Call ``create(tenant=, actor=)`` for each selected tenant; report the count and each refusal."""
    actor = Actor.staff(request.user)
    queued, refused = 0, []
    for tenant in queryset:
        try:
            create(tenant=tenant, actor=actor)
            queued += 1
        except BackupError as exc:
            refused.append(str(exc))
    modeladmin.message_user(request, format_html(done, queued))
    for reason in refused:
        modeladmin.message_user(request, reason, level=messages.WARNING)


@admin.action(description="Back up now", permissions=["backup_tenant"])
def backup_now(modeladmin, request, queryset):
    _queue_for_each(
        modeladmin,
        request,
        queryset,
        lambda tenant, actor: backup_create(kind=Backup.Kind.TENANT, tenant=tenant, actor=actor),
        "{} tenant(s) queued for backup",
    )


@admin.action(
    description="Export data (tar.gz of CSV tables, made in the background)", permissions=["export_tenant"]
)
def export_data(modeladmin, request, queryset):
    link = reverse("admin:backups_export_changelist")
    _queue_for_each(
        modeladmin,
        request,
        queryset,
        export_create,
        "{} export(s) queued; download them from " + f'<a href="{link}">Backups › Exports</a> when ready',
    )


# The tenant list gets these actions without editing the tenants app; each has its own permission.
TenantAdmin.actions = [*(TenantAdmin.actions or []), backup_now, export_data]
# (Django finds them by name, has_<permission>_permission; mypy cannot see attributes added here.)
TenantAdmin.has_backup_tenant_permission = (  # type: ignore[attr-defined]
    lambda self, request: request.user.has_perm("backups.add_backup")
)
TenantAdmin.has_export_tenant_permission = (  # type: ignore[attr-defined]
    lambda self, request: request.user.has_perm("backups.download_backup")
)


# === Continuous archive (pgBackRest): its admin lives in backups/pitr/admin.py ===
from backups.pitr.admin import PitrBackupAdmin, pitr_dashboard  # noqa: E402, F401 - registers it
