"""Admin for custom domains: status, certificate expiry, filters, actions and each domain's trail."""

from datetime import timedelta
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from core.admin import ReadOnlyAdminMixin, actor_text, details_text
from core.admin_links import admin_path
from core.audit import Actor
from core.models import AuditEvent
from tenants.domains import services as domain_services
from tenants.domains.jobs import issue_platform_certificate_job, verify_domain_job
from tenants.errors import TenantError
from tenants.models import Certificate, Domain, PlatformCertificate


class DomainHealthFilter(admin.SimpleListFilter):
    title = "needs attention"
    parameter_name = "health"

    def lookups(self, request, model_admin):
        return [("pending", "Pending verification"), ("failing", "Failing"),
                ("expiring", "Certificate expires within 14 days")]

    def queryset(self, request, queryset):
        S = Domain.Status
        if self.value() == "pending":
            return queryset.filter(status=S.PENDING_VERIFICATION)
        if self.value() == "failing":
            return queryset.filter(status__in=(S.VERIFICATION_FAILED, S.MOVED)) | queryset.filter(
                certificate__status=Certificate.Status.FAILED
            )
        if self.value() == "expiring":
            return queryset.filter(certificate__not_after__lte=timezone.now() + timedelta(days=14))
        return queryset


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    list_display = ["domain", "tenant", "kind", "status", "certificate_status", "certificate_expires",
                    "last_checked_at", "is_primary"]
    list_filter = [DomainHealthFilter, "status", "kind"]
    search_fields = ["domain", "tenant__subdomain", "tenant__name"]
    list_select_related = ["tenant", "certificate"]
    readonly_fields = ["domain", "tenant", "kind", "status", "status_reason", "verification_token",
                       "check_attempts", "last_checked_at", "next_check_at", "verified_at", "expires_at",
                       "moved_at", "certificate_status", "certificate_expires", "certificate_error",
                       "audit_trail"]
    fields = [*readonly_fields[:-1], "is_primary", "audit_trail"]
    actions = ["reverify", "issue_certificate", "disable", "enable"]

    def has_add_permission(self, request):
        # Domains are added by their shops (or provisioning); staff act on existing ones.
        return False

    @admin.display(description="certificate")
    def certificate_status(self, obj):
        cert = getattr(obj, "certificate", None)
        return cert.get_status_display() if cert else "-"

    @admin.display(description="expires", ordering="certificate__not_after")
    def certificate_expires(self, obj):
        cert = getattr(obj, "certificate", None)
        return cert.not_after if cert and cert.not_after else "-"

    @admin.display(description="certificate error")
    def certificate_error(self, obj):
        cert = getattr(obj, "certificate", None)
        return cert.last_error if cert else ""

    @admin.display(description="audit trail")
    def audit_trail(self, obj):
        domain_events = AuditEvent.objects.filter(target=obj.domain, action__startswith="domain.")[:50]
        events = list(domain_events) + list(
            AuditEvent.objects.filter(target=obj.domain, action__startswith="certificate.")[:50]
        )
        events.sort(key=lambda e: e.created_at, reverse=True)
        if not events:
            return "-"
        url = admin_path(AuditEvent, "changelist") + "?" + urlencode({"q": obj.domain})
        rows = format_html_join(
            "", "<li>{} {} <b>{}</b> {}</li>",
            ((f"{e.created_at:%Y-%m-%d %H:%M:%S}", e.actor, e.action, e.details or "") for e in events),
        )
        return format_html('<ul>{}</ul><a href="{}">all events</a>', rows, url)

    def _actor(self, request) -> Actor:
        return Actor.staff(request.user)

    # Each action has its own permission (Domain.Meta.permissions); Django looks these up by name.
    def has_verify_domain_permission(self, request) -> bool:
        return request.user.has_perm("tenants.verify_domain")

    def has_issue_certificate_permission(self, request) -> bool:
        return request.user.has_perm("tenants.issue_certificate")

    def has_disable_domain_permission(self, request) -> bool:
        return request.user.has_perm("tenants.disable_domain")

    def has_enable_domain_permission(self, request) -> bool:
        return request.user.has_perm("tenants.enable_domain")

    @admin.action(description="Re-verify selected domains now", permissions=["verify_domain"])
    def reverify(self, request, queryset):
        actor = self._actor(request)
        count = 0
        for domain in queryset.filter(kind=Domain.Kind.CUSTOM):
            verify_domain_job.delay(domain.pk, *actor.job_args)
            count += 1
        self.message_user(request, f"{count} domain(s) queued for verification.")

    @admin.action(description="Issue or renew certificates", permissions=["issue_certificate"])
    def issue_certificate(self, request, queryset):
        actor = self._actor(request)
        count = 0
        for domain in queryset.filter(kind=Domain.Kind.CUSTOM):
            if domain.status in domain_services.UNVERIFIED or domain.status == Domain.Status.DISABLED:
                self.message_user(request, f"No certificate for {domain.domain}: it is "
                                           f"{domain.get_status_display().lower()}; verify it first.",
                                  messages.WARNING)
                continue
            domain_services.certificate_request(domain=domain, actor=actor)
            count += 1
        self.message_user(request, f"{count} certificate(s) queued.")

    @admin.action(description="Disable selected domains (stop routing)", permissions=["disable_domain"])
    def disable(self, request, queryset):
        actor = self._actor(request)
        count = 0
        for domain in queryset.filter(kind=Domain.Kind.CUSTOM):
            try:
                domain_services.domain_disable(domain=domain, actor=actor, reason="Disabled by staff.")
                count += 1
            except TenantError as exc:
                self.message_user(request, str(exc), messages.ERROR)
        self.message_user(request, f"{count} domain(s) disabled.")

    @admin.action(description="Enable disabled domains (they are verified again)",
                  permissions=["enable_domain"])
    def enable(self, request, queryset):
        actor = self._actor(request)
        count = 0
        for domain in queryset.filter(kind=Domain.Kind.CUSTOM, status=Domain.Status.DISABLED):
            domain_services.domain_enable(domain=domain, actor=actor)
            verify_domain_job.delay(domain.pk, *actor.job_args)
            count += 1
        self.message_user(request, f"{count} domain(s) enabled and queued for verification.")


@admin.register(PlatformCertificate)
class PlatformCertificateAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The platform wildcard (DNS-01): expiry, status and the last error; never the key or chain."""

    list_display = ["__str__", "status", "not_after", "issued_at", "attempts", "next_attempt_at",
                    "short_error"]
    fields = ("base_domain", "names_text", "status", "serial", "not_before", "not_after", "issued_at",
              "attempts", "next_attempt_at", "last_error", "audit_trail")
    readonly_fields = fields
    actions = ["issue_now"]

    @admin.display(description="last error")
    def short_error(self, obj):
        return (obj.last_error[:120] + "…") if len(obj.last_error) > 120 else obj.last_error

    @admin.display(description="names")
    def names_text(self, obj):
        return ", ".join(obj.names) or "-"

    @admin.display(description="audit trail")
    def audit_trail(self, obj):
        events = AuditEvent.objects.filter(target=str(obj), action__startswith="platform_certificate.")[:50]
        rows = format_html_join(
            "", "<li>{} UTC · {} · <b>{}</b> {}</li>",
            ((f"{e.created_at:%Y-%m-%d %H:%M:%S}", actor_text(e.actor), e.action, details_text(e.details))
             for e in events),
        )
        return format_html('<ul style="margin:0;padding:0;list-style:none">{}</ul>', rows) if events else "-"

    def has_issue_platform_certificate_permission(self, request) -> bool:
        return request.user.has_perm("tenants.issue_platform_certificate")

    @admin.action(description="Issue or renew the platform certificate now (DNS-01)",
                  permissions=["issue_platform_certificate"])
    def issue_now(self, request, queryset):
        issue_platform_certificate_job.delay(*Actor.staff(request.user).job_args)
        self.message_user(request, "Platform certificate queued for issuance; the result shows here and in "
                                   "the audit log.")
