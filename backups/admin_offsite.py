"""Console pages for off-site copies and disaster-recovery drills (imported by backups.admin).

Off-site copies are listed on their own page and on each backup's page; DR drills have a report
page each (what was restored, from where, how long, what was checked) and a "Run a DR drill now"
page. Actions enqueue jobs; the services write the audit events.
"""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from backups import jobs
from backups.errors import BackupError
from backups.management.commands._progress import human_bytes, human_seconds
from backups.models import DisasterRecoveryDrill, OffsiteCopy
from backups.offsite_storage import offsite_configured, offsite_storage
from backups.services import offsite
from core.admin import ReadOnlyAdminMixin
from core.audit import Actor

STATUS_COLOURS = {"verified": "green", "failed": "#ba2121", "corrupt": "#ba2121"}


def _status(obj: OffsiteCopy) -> str:
    colour = STATUS_COLOURS.get(obj.status, "#996800")
    return format_html('<b style="color:{}" title="{}">{}</b>', colour, obj.status_reason, obj.status)


def _lag(obj: OffsiteCopy) -> str:
    if obj.copied_at is None:
        return "-"
    return f"{(obj.copied_at - obj.source_ready_at).total_seconds():.1f} s"


INLINE_FIELDS = ("status_badge", "store", "location", "copy_lag", "verified_at", "attempts", "status_reason")


class DrillColumnsMixin:
    """The result and RTO columns of both drill lists (restore drills, disaster-recovery drills)."""

    @admin.display(description="result", boolean=True, ordering="passed")
    def result(self, obj):
        return obj.passed

    @admin.display(description="measured RTO", ordering="rto_seconds")
    def rto(self, obj):
        return f"{obj.rto_seconds:.2f} s" if obj.rto_seconds is not None else "-"


class OffsiteCopyInline(ReadOnlyAdminMixin, admin.TabularInline):
    """On a backup's page: where its off-site copy is and when it was last read back there."""

    model = OffsiteCopy
    fk_name = "backup"
    extra = 0
    can_delete = False
    fields = INLINE_FIELDS
    readonly_fields = INLINE_FIELDS

    @admin.display(description="status")
    def status_badge(self, obj):
        return _status(obj)

    @admin.display(description="copy lag")
    def copy_lag(self, obj):
        return _lag(obj)


@admin.register(OffsiteCopy)
class OffsiteCopyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "source_created_at",
        "kind",
        "tenant_label",
        "status_badge",
        "size",
        "copy_lag",
        "verified_at",
        "attempts",
        "next_attempt_at",
        "status_reason",
    ]
    list_filter = ["status", "kind"]
    search_fields = ["tenant_label", "location", "sha256"]
    readonly_fields = [f.name for f in OffsiteCopy._meta.fields]
    actions = ["verify_offsite", "copy_again"]

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return _status(obj)

    @admin.display(description="size", ordering="size_bytes")
    def size(self, obj):
        return human_bytes(obj.size_bytes) if obj.size_bytes else "-"

    @admin.display(description="copy lag")
    def copy_lag(self, obj):
        return _lag(obj)

    def has_copy_offsite_permission(self, request) -> bool:
        return request.user.has_perm("backups.copy_offsite")

    @admin.action(
        description="Verify selected off-site copies (read back from the second store)",
        permissions=["copy_offsite"],
    )
    def verify_offsite(self, request, queryset):
        actor = Actor.staff(request.user)
        chosen = [c for c in queryset if c.status == OffsiteCopy.Status.VERIFIED]
        for copy in chosen:
            jobs.offsite_verify_job.delay(str(copy.pk), *actor.job_args)
        self.message_user(request, f"{len(chosen)} off-site copy(ies) queued for verification")

    @admin.action(
        description="Copy selected again (failed or corrupt copies, from the primary store)",
        permissions=["copy_offsite"],
    )
    def copy_again(self, request, queryset):
        actor = Actor.staff(request.user)
        queued = 0
        for copy in queryset.select_related("backup", "export"):
            if copy.status not in OffsiteCopy.RETRYABLE or (copy.backup is None and copy.export is None):
                continue
            try:
                offsite.offsite_copy_queue(backup=copy.backup, export=copy.export, actor=actor)
                queued += 1
            except BackupError as exc:
                self.message_user(request, str(exc), level="warning")
        self.message_user(request, f"{queued} off-site copy(ies) queued")


@admin.register(DisasterRecoveryDrill)
class DisasterRecoveryDrillAdmin(DrillColumnsMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """The DR drill reports: what was restored, from where, how long it took, what was checked."""

    list_display = ["started_at", "trigger", "result", "rto", "tenant_label", "store", "reason"]
    list_filter = ["passed", "trigger"]
    readonly_fields = [
        "started_at",
        "finished_at",
        "trigger",
        "requested_by",
        "passed",
        "rto",
        "store",
        "platform_key",
        "tenant_label",
        "shop_key",
        "reason",
        "report",
    ]
    exclude = ["checks", "rto_seconds"]

    @admin.display(description="checks (seconds since the start)")
    def report(self, obj):
        return format_html_join(
            "",
            "<div>{} <b>{}</b> at {} s: {}</div>",
            (
                ("✔" if c["ok"] else "✘", c["check"], c.get("seconds", "-"), c["detail"])
                for c in obj.checks
            ),
        )

    def get_urls(self):
        own = [
            path(
                "run/",
                self.admin_site.admin_view(self.run_view),
                name="backups_disasterrecoverydrill_run",
            )
        ]
        return own + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "may_run_dr_drill": request.user.has_perm("backups.run_dr_drill"),
            "offsite_label": _offsite_label(),
        }
        return super().changelist_view(request, extra_context)

    def run_view(self, request):
        """GET: what a drill does; POST: queue one (on the long queue)."""
        if not request.user.has_perm("backups.run_dr_drill"):
            raise PermissionDenied
        error = None
        if request.method == "POST":
            try:
                offsite_storage()  # a clear refusal now rather than a failed job later
            except BackupError as exc:
                error = str(exc)
            else:
                actor = Actor.staff(request.user)
                shop = request.POST.get("shop", "").strip().lower()
                jobs.dr_drill_job.delay(shop, "admin", *actor.job_args)
                self.message_user(request, "DR drill queued; its report appears here when it ends")
                return redirect("admin:backups_disasterrecoverydrill_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": "Run a disaster-recovery drill",
            "opts": self.model._meta,
            "offsite_label": _offsite_label(),
            "error": error,
            "cancel": reverse("admin:backups_disasterrecoverydrill_changelist"),
        }
        return render(request, "admin/backups/disasterrecoverydrill/run.html", context)


def _offsite_label() -> str:
    if not offsite_configured():
        return "not configured (set BACKUP_OFFSITE_S3_BUCKET)"
    try:
        return offsite_storage().describe()
    except BackupError as exc:
        return f"misconfigured: {exc}"


def offsite_summary() -> dict:
    """For the backups dashboard: the second store, copy lag, copies by state, the latest DR drill."""
    lag, waiting = offsite.offsite_lag()
    counts = dict.fromkeys(OffsiteCopy.Status.values, 0)
    for row in OffsiteCopy.objects.values("status").annotate(n=Count("pk")):
        counts[row["status"]] = row["n"]
    return {
        "store": _offsite_label(),
        "configured": offsite_configured(),
        "lag_seconds": lag,
        "lag_text": human_seconds(lag or 0),
        "waiting": waiting,
        "counts": counts,
        "latest_dr_drill": DisasterRecoveryDrill.objects.first(),
    }
