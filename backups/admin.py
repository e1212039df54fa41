"""Backups console: list with status and RPO, back up now, restore behind a typed confirmation,
short-lived download links, drill history, PITR status. Actions enqueue jobs; views stay thin."""

import tempfile

import django_rq
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

from backups.errors import BackupError
from backups.management.commands._progress import human_bytes
from backups.models import Backup, Restore, RestoreDrill
from backups.selectors import pitr_status, rpo_breached
from backups.services import (
    BACKUP_QUEUE,
    backup_create,
    restore_as_new_check,
    restore_in_place_check,
    tenant_export,
)
from backups.storage import LocalStorage, backup_storage
from tenants.admin import TenantAdmin
from tenants.audit import Actor
from tenants.models import Tenant

DOWNLOAD_SALT = "backups.download"


def _age(when) -> str:
    if when is None:
        return "-"
    seconds = (timezone.now() - when).total_seconds()
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
class BackupAdmin(admin.ModelAdmin):
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

    @admin.display(description="")
    def links(self, obj):
        # Shown to everyone who sees the list; the views check backups.download/restore_backup.
        if obj.status != Backup.Status.VERIFIED:
            return ""
        parts = [(reverse("admin:backups_backup_download", args=[obj.pk]), "download")]
        if obj.kind == Backup.Kind.TENANT:
            parts.append((reverse("admin:backups_backup_restore", args=[obj.pk]), "restore..."))
        return format_html_join(" | ", '<a href="{}">{}</a>', parts)

    @admin.display(description="manifest")
    def manifest_view(self, obj):
        import json

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
        }
        return super().changelist_view(request, extra_context)

    @admin.action(description="Verify selected backups (read back, compare sha256)", permissions=["view"])
    def verify_selected(self, request, queryset):
        actor = Actor.staff(request.user)
        for backup in queryset:
            django_rq.get_queue(BACKUP_QUEUE).enqueue(
                "backups.jobs.backup_verify_job", str(backup.pk), actor.type, actor.name
            )
        self.message_user(request, f"{queryset.count()} backup(s) queued for verification")

    @admin.action(description="Run a restore drill on selected backups", permissions=["view"])
    def drill_selected(self, request, queryset):
        actor = Actor.staff(request.user)
        for backup in queryset:
            django_rq.get_queue("long").enqueue(
                "backups.jobs.restore_drill_one_job", str(backup.pk), actor.type, actor.name
            )
        self.message_user(request, f"{queryset.count()} backup(s) queued for a restore drill")

    def get_urls(self):
        own = [
            path(
                "<uuid:pk>/restore/",
                self.admin_site.admin_view(self.restore_view),
                name="backups_backup_restore",
            ),
            path(
                "<uuid:pk>/download/",
                self.admin_site.admin_view(self.download_view),
                name="backups_backup_download",
            ),
            path("<uuid:pk>/file/", self.admin_site.admin_view(self.file_view), name="backups_backup_file"),
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
                    django_rq.get_queue("long").enqueue(
                        "backups.jobs.restore_in_place_job",
                        str(tenant.pk),
                        str(backup.pk),
                        form.cleaned_data["confirm"],
                        actor.type,
                        actor.name,
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
                    django_rq.get_queue("long").enqueue(
                        "backups.jobs.restore_as_new_job", str(backup.pk), subdomain, actor.type, actor.name
                    )
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

    def download_view(self, request, pk):
        """Redirect to a short-lived link: presigned for S3, signed by us for the local folder."""
        if not request.user.has_perm("backups.download_backup"):
            raise PermissionDenied
        backup = get_object_or_404(Backup, pk=pk, status=Backup.Status.VERIFIED)
        storage = backup_storage()
        seconds = settings.BACKUP_DOWNLOAD_LINK_SECONDS
        url = storage.download_url(backup.location, expires=seconds)
        if url is None:
            token = signing.TimestampSigner(salt=DOWNLOAD_SALT).sign(str(backup.pk))
            url = reverse("admin:backups_backup_file", args=[backup.pk]) + f"?token={token}"
        from tenants.audit import audit_record

        audit_record(
            actor=Actor.staff(request.user),
            action="backup.download_link",
            tenant=backup.tenant,
            target=str(backup.pk),
            details={"expires_in": seconds},
        )
        return HttpResponseRedirect(url)

    def file_view(self, request, pk):
        try:
            value = signing.TimestampSigner(salt=DOWNLOAD_SALT).unsign(
                request.GET.get("token", ""), max_age=settings.BACKUP_DOWNLOAD_LINK_SECONDS
            )
        except signing.BadSignature:
            # (Also when expired.) The link itself is the grant; it was issued to a permitted user.
            raise Http404("This download link is invalid or has expired; ask for a new one.") from None
        if value != str(pk):
            raise Http404
        backup = get_object_or_404(Backup, pk=pk)
        storage = backup_storage()
        if not isinstance(storage, LocalStorage):
            raise Http404
        return FileResponse(
            open(storage._path(backup.location), "rb"),
            as_attachment=True,  # noqa: SIM115
            filename=f"{backup.tenant_label or backup.kind}-{backup.pk}.dump",
        )


def _storage_label() -> str:
    try:
        return backup_storage().describe()
    except BackupError as exc:
        return f"misconfigured: {exc}"


@admin.register(RestoreDrill)
class RestoreDrillAdmin(admin.ModelAdmin):
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

    @admin.display(description="result", boolean=True, ordering="passed")
    def result(self, obj):
        return obj.passed

    @admin.display(description="measured RTO", ordering="rto_seconds")
    def rto(self, obj):
        return f"{obj.rto_seconds:.2f} s" if obj.rto_seconds is not None else "-"

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


@admin.action(description="Back up now", permissions=["backup_tenant"])
def backup_now(modeladmin, request, queryset):
    actor = Actor.staff(request.user)
    queued, refused = 0, []
    for tenant in queryset:
        try:
            backup_create(kind=Backup.Kind.TENANT, tenant=tenant, actor=actor)
            queued += 1
        except BackupError as exc:
            refused.append(str(exc))
    modeladmin.message_user(request, f"{queued} tenant(s) queued for backup")
    for reason in refused:
        modeladmin.message_user(request, reason, level=messages.WARNING)


@admin.action(description="Export data (tar.gz of CSV tables)", permissions=["export_tenant"])
def export_data(modeladmin, request, queryset):
    if queryset.count() != 1:
        modeladmin.message_user(request, "Select exactly one tenant to export.", level=messages.ERROR)
        return None
    tenant = queryset.get()
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - FileResponse closes it
    try:
        tenant_export(tenant=tenant, out=spool, actor=Actor.staff(request.user))
    except BackupError as exc:
        spool.close()
        modeladmin.message_user(request, str(exc), level=messages.ERROR)
        return None
    spool.seek(0)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    return FileResponse(spool, as_attachment=True, filename=f"{tenant.subdomain}-export-{stamp}.tar.gz")


# The tenant list gets these actions without editing the tenants app; each has its own permission.
TenantAdmin.actions = [*(TenantAdmin.actions or []), backup_now, export_data]
TenantAdmin.has_backup_tenant_permission = lambda self, request: request.user.has_perm("backups.add_backup")
TenantAdmin.has_export_tenant_permission = lambda self, request: request.user.has_perm(
    "backups.download_backup"
)
