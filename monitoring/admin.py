"""Admin: the status dashboard, alert rules, channels (write-only secrets), incidents, probes."""

import time
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.utils import timezone
from rq import Worker

from core.admin import ReadOnlyAdminMixin
from core.audit import Actor
from monitoring import charts
from monitoring.collectors import queue_states
from monitoring.errors import MonitoringError
from monitoring.health import redis_client
from monitoring.jobs import test_alert_job
from monitoring.models import AlertRule, Channel, Delivery, Incident, ProbeResult, StatusDashboard
from monitoring.probes import days_left
from monitoring.rules import SPECS
from monitoring.selectors import (
    dashboard_backup_sizes,
    dashboard_counts,
    dashboard_facts,
    dashboard_shops,
    latest_probes,
)
from monitoring.services import alerts, channels


@admin.register(StatusDashboard)
class StatusDashboardAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """A page, not rows: the changelist is replaced by the dashboard."""

    def changelist_view(self, request, extra_context=None):
        # Replacing the changelist skips Django's own check: a staff login in no group must not see it.
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        counts = dashboard_counts()
        shops = dashboard_shops(now=now)
        for shop in shops:
            shop["strip_24h"] = charts.uptime_strip(shop["hours"])
            shop["strip_30d"] = charts.uptime_strip(shop["days"], cell=6)
            shop["spark"] = charts.sparkline(shop["latency_hours"])
        by_expiry: list[dict[str, Any]] = sorted(
            (
                {
                    "host": p["host"],
                    "tenant": p["tenant__subdomain"],
                    "days": days_left(p["tls_expires_at"], now),
                }
                for p in latest_probes()
                if p["tls_expires_at"] is not None
            ),
            key=lambda c: c["days"],
        )
        certificates = by_expiry[:15]
        try:
            conn = redis_client()
            queues = queue_states(conn)
            workers = [
                {
                    "name": w.name,
                    "queues": ", ".join(w.queue_names()),
                    "state": w.get_state(),
                    "age": round(time.time() - w.last_heartbeat.timestamp()) if w.last_heartbeat else None,
                }
                for w in Worker.all(connection=conn)
            ]
            redis_error = ""
        except Exception as exc:  # the dashboard must render when Redis is down, saying so
            queues, workers, redis_error = {}, [], f"{type(exc).__name__}: {exc}"
        context = {
            **self.admin_site.each_context(request),
            "title": "Status dashboard",
            "now": now,
            "tenants_by_status": charts.bar_chart(counts["tenants_by_status"]),
            "tenants_by_plan": charts.bar_chart(counts["tenants_by_plan"]),
            "domains_by_status": charts.bar_chart(counts["domains_by_status"]),
            "shops": shops,
            "certificates": certificates,
            "cert_warn_days": AlertRule.objects.filter(kind=AlertRule.Kind.CERTIFICATE_EXPIRING)
            .values_list("threshold", flat=True)
            .first()
            or SPECS[AlertRule.Kind.CERTIFICATE_EXPIRING].threshold,
            "queues": queues,
            "queue_chart": charts.bar_chart(
                [(f"{q} queued", s["queued"]) for q, s in queues.items()]
                + [(f"{q} failed", s["failed"]) for q, s in queues.items()]
            ),
            "workers": workers,
            "redis_error": redis_error,
            "incidents": Incident.objects.filter(status__in=Incident.UNRESOLVED).select_related("rule")[:20],
            "incident_count": Incident.objects.filter(status__in=Incident.UNRESOLVED).count(),
            "rules": AlertRule.objects.all(),
            "facts": dashboard_facts(now=now),
            "backup_sizes": backup_sizes_chart(now=now),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/monitoring/status_dashboard.html", context)


def backup_sizes_chart(*, now) -> dict:
    sizes = dashboard_backup_sizes(now=now)
    days, counts = sizes["days"], sizes["counts"]

    def tip(i: int, kind: str, size: float) -> str:
        return f"{days[i]:%Y-%m-%d} {kind}: {counts[kind][i]} backup(s), {filesizeformat(size)}"

    chart = charts.stacked_columns(
        [f"{d:%b %d}" for d in days], sizes["series"], fmt=filesizeformat, tip=tip
    )
    return {**sizes, "chart": chart}


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = [
        "kind",
        "enabled",
        "threshold",
        "threshold_means",
        "severity",
        "last_status",
        "last_evaluated_at",
    ]
    list_editable = ["enabled", "threshold", "severity"]
    fields = ["kind", "description", "enabled", "threshold", "threshold_means", "severity", "last_status"]
    readonly_fields = ["kind", "description", "threshold_means", "last_status"]

    @admin.display(description="threshold means")
    def threshold_means(self, rule):
        return SPECS[rule.kind].threshold_means

    @admin.display(description="what it watches")
    def description(self, rule):
        return SPECS[rule.kind].summary

    def has_add_permission(self, request):
        return False  # the rules are built in

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        try:
            alerts.rule_update(
                rule=AlertRule.objects.get(pk=obj.pk), threshold=obj.threshold, severity=obj.severity,
                enabled=obj.enabled, actor=Actor.staff(request.user),
            )
        except MonitoringError as exc:
            self.message_user(request, str(exc), messages.ERROR)


class ChannelForm(forms.ModelForm):
    secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Slack: the incoming-webhook URL. PagerDuty: the integration (routing) key. Webhook: the "
        "signing secret (16+ characters). Never shown again; leave empty to keep the stored one.",
    )

    class Meta:
        model = Channel
        fields = ["name", "kind", "enabled", "min_severity", "target", "secret"]
        help_texts = {
            "target": "E-mail: recipients, comma separated. Webhook: its URL. "
            "PagerDuty: events URL, empty for the default.",
        }

    def clean(self):
        super().clean()
        data = self.cleaned_data  # what ModelForm.clean() returns (typed by django-stubs as optional)
        if self.errors:
            return data
        try:
            channels.channel_validate(
                kind=data["kind"],
                target=data.get("target", "").strip(),
                secret=data.get("secret") or (None if self.instance.pk else ""),
                existing=self.instance if self.instance.pk else None,
            )
        except MonitoringError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


class DeliveryInline(admin.TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    fields = (
        "created_at",
        "channel",
        "event",
        "status",
        "attempts",
        "response_code",
        "last_error",
        "delivered_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = ["name", "kind", "enabled", "min_severity", "target", "secret_hint", "updated_at"]
    readonly_fields = ["secret_hint"]
    actions = ["send_test"]

    def get_fields(self, request, obj=None):
        return ["name", "kind", "enabled", "min_severity", "target", "secret", "secret_hint"]

    def save_model(self, request, obj, form, change):
        actor = Actor.staff(request.user)
        data = form.cleaned_data
        fields = {k: data[k] for k in ("name", "kind", "enabled", "min_severity", "target")}
        if change:
            current = Channel.objects.get(pk=obj.pk)
            saved = channels.channel_update(
                channel=current, secret=data.get("secret") or None, actor=actor, **fields
            )
        else:
            saved = channels.channel_create(secret=data.get("secret", ""), actor=actor, **fields)
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        channels.channel_delete(channel=obj, actor=Actor.staff(request.user))

    def delete_queryset(self, request, queryset):
        for channel in queryset:
            channels.channel_delete(channel=channel, actor=Actor.staff(request.user))

    def has_send_test_alert_permission(self, request) -> bool:
        return request.user.has_perm("monitoring.send_test_alert")

    @admin.action(description="Send a test alert", permissions=["send_test_alert"])
    def send_test(self, request, queryset):
        actor = Actor.staff(request.user)
        for channel in queryset:
            test_alert_job.delay(channel.pk, *actor.job_args)
        self.message_user(
            request, f"{queryset.count()} test alert(s) queued; see the deliveries below each channel."
        )


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "severity", "status", "tenant", "opened_at", "last_seen_at", "resolved_at"]
    list_filter = ["status", "severity", "rule"]
    search_fields = ["title", "dedup_key"]
    list_select_related = ["tenant", "rule"]
    readonly_fields = [
        "rule",
        "dedup_key",
        "title",
        "severity",
        "status",
        "tenant",
        "link",
        "details",
        "opened_at",
        "last_seen_at",
        "acknowledged_at",
        "acknowledged_by",
        "resolved_at",
        "resolved_by",
    ]
    inlines = [DeliveryInline]
    actions = ["acknowledge", "resolve"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def _each(self, request, queryset, service, verb: str) -> None:
        done, refused = 0, []
        for incident in queryset:
            try:
                service(incident=incident, actor=Actor.staff(request.user))
                done += 1
            except MonitoringError as exc:
                refused.append(str(exc))
        self.message_user(request, f"{done} incident(s) {verb}.")
        for message in refused:
            self.message_user(request, message, messages.WARNING)

    def has_acknowledge_incident_permission(self, request) -> bool:
        return request.user.has_perm("monitoring.acknowledge_incident")

    def has_resolve_incident_permission(self, request) -> bool:
        return request.user.has_perm("monitoring.resolve_incident")

    @admin.action(description="Acknowledge", permissions=["acknowledge_incident"])
    def acknowledge(self, request, queryset):
        self._each(request, queryset, alerts.incident_acknowledge, "acknowledged")

    @admin.action(description="Resolve (notifies the channels)", permissions=["resolve_incident"])
    def resolve(self, request, queryset):
        self._each(request, queryset, alerts.incident_resolve, "resolved")


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "channel",
        "event",
        "incident",
        "status",
        "attempts",
        "response_code",
        "last_error",
    ]
    list_filter = ["status", "event", "channel"]
    list_select_related = ["channel", "incident"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ProbeResult)
class ProbeResultAdmin(admin.ModelAdmin):
    list_display = [
        "checked_at",
        "host",
        "tenant",
        "ok",
        "status_code",
        "latency_ms",
        "error",
        "tls_expires_at",
    ]
    list_filter = ["ok"]
    search_fields = ["host"]
    list_select_related = ["tenant"]
    date_hierarchy = "checked_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
