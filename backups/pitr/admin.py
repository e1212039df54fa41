"""The continuous archive in the console: cluster backups (pgBackRest), and a shop restored to a
moment from its tenant page. Imported by backups.admin."""

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import path

from backups import jobs
from backups.errors import BackupError
from backups.models import PitrBackup, WalArchive
from backups.pitr import config
from backups.pitr.selectors import archive_state, recoverable_window
from backups.pitr.services import moment_parse, restore_moment_check
from backups.services.restore import restore_as_new_subdomain_check, restore_in_place_tenant_check
from core.admin import ReadOnlyAdminMixin
from core.admin_links import admin_path
from core.audit import Actor
from tenants.models import Tenant


def pitr_dashboard() -> dict[str, Any]:
    """What the backups dashboard shows of the continuous archive."""
    if not config.enabled():
        return {"enabled": False}
    state = archive_state()
    return {
        "enabled": True,
        "state": state,
        "window": recoverable_window(state),
        "recent": list(PitrBackup.objects.all()[:5]),
        "repos": (WalArchive.objects.filter(pk=1).values_list("repos", flat=True).first() or []),
    }


@admin.register(PitrBackup)
class PitrBackupAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "type",
        "repo",
        "status",
        "label",
        "stopped_at",
        "size",
        "stored",
        "duration",
    ]
    list_filter = ["status", "type", "repo"]
    search_fields = ["label"]

    @admin.display(description="size")
    def size(self, obj: PitrBackup) -> str:
        return filesizeformat(obj.size_bytes)

    @admin.display(description="stored")
    def stored(self, obj: PitrBackup) -> str:
        return filesizeformat(obj.repo_size_bytes)

    @admin.display(description="duration")
    def duration(self, obj: PitrBackup) -> str:
        return f"{obj.duration_seconds:.1f} s" if obj.duration_seconds is not None else ""

    def get_urls(self):
        own = [
            path(
                "restore-tenant/<uuid:tenant_id>/",
                self.admin_site.admin_view(self.restore_tenant_view),
                name="backups_pitrbackup_restore_tenant",
            )
        ]
        return own + super().get_urls()

    def restore_tenant_view(self, request, tenant_id):
        if not request.user.has_perm("backups.restore_to_time"):
            raise PermissionDenied
        tenant = get_object_or_404(Tenant, pk=tenant_id)
        form = MomentForm(request.POST or None)
        window = recoverable_window() if config.enabled() else None
        if request.method == "POST" and form.is_valid():
            try:
                return self._queue(request, tenant, form.cleaned_data)
            except BackupError as exc:
                form.add_error(None, str(exc))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Restore {tenant.name} ({tenant.subdomain}) to a moment",
            "tenant": tenant,
            "form": form,
            "window": window,
            "enabled": config.enabled(),
            "opts": self.model._meta,
        }
        return render(request, "admin/backups/pitrbackup/restore_tenant.html", context)

    def _queue(self, request, tenant: Tenant, data: dict[str, Any]):
        """Every check that needs no scratch cluster, then the job; a refusal queues nothing."""
        moment = moment_parse(data["moment"])
        restore_moment_check(to_time=moment)
        actor = Actor.staff(request.user)
        if data["mode"] == "as_new":
            subdomain = restore_as_new_subdomain_check(subdomain=data["new_subdomain"])
            if data["confirm"].strip() != subdomain:
                raise BackupError(f"Type the new subdomain ({subdomain}) to confirm.")
            jobs.pitr_restore_tenant_job.delay(
                str(tenant.pk), moment.isoformat(), subdomain, "", *actor.job_args
            )
            self.message_user(
                request, f"Restore of {tenant.subdomain} at {moment:%Y-%m-%d %H:%M:%S} as {subdomain} queued"
            )
        else:
            restore_in_place_tenant_check(tenant=tenant, confirm=data["confirm"])
            jobs.pitr_restore_tenant_job.delay(
                str(tenant.pk), moment.isoformat(), "", data["confirm"], *actor.job_args
            )
            self.message_user(
                request,
                f"Restore of {tenant.subdomain} to {moment:%Y-%m-%d %H:%M:%S} UTC queued "
                "(a safety backup is taken first)",
            )
        return redirect(admin_path(tenant))


class MomentForm(forms.Form):
    moment = forms.CharField(
        label="Moment (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}),
        help_text="The shop's data as it was at this moment, to the second, in UTC.",
    )
    mode = forms.ChoiceField(
        choices=[("in_place", "In place (replaces the shop's data)"), ("as_new", "As a new shop")],
        widget=forms.RadioSelect,
        initial="in_place",
    )
    new_subdomain = forms.CharField(required=False, help_text="For a restore as a new shop")
    confirm = forms.CharField(
        required=False, help_text="Type the shop's subdomain (in place) or the new subdomain (as new)"
    )
