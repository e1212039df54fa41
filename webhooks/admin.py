"""Admin: webhook endpoints (the secret is write-only, shown once) and deliveries (re-send)."""

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils.html import format_html

from core.admin import ReadOnlyAdminMixin
from core.admin_links import admin_path
from core.audit import Actor
from webhooks import services
from webhooks.errors import WebhookError
from webhooks.events import EVENT_TYPES
from webhooks.models import Attempt, Delivery, Endpoint

SECRET_TEMPLATE = "admin/webhooks/endpoint/secret.html"


class EndpointForm(forms.ModelForm):
    events = forms.MultipleChoiceField(
        choices=[(name, f"{name}: {what}") for name, what in EVENT_TYPES.items()],
        required=False,
        # "radiolist": the admin's own class for choice lists, so each label takes the row's width.
        widget=forms.CheckboxSelectMultiple(attrs={"class": "radiolist"}),
        help_text="None ticked: every event.",
    )
    secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave empty to get a new whsec_ secret (shown once, after saving). "
        "Or paste one of your own (whsec_ and base64 of 24-64 bytes).",
    )

    class Meta:
        model = Endpoint
        fields = ["tenant", "url", "description", "events", "secret"]
        labels = {"url": "URL"}
        widgets = {"url": forms.URLInput(attrs={"class": "vURLField"})}  # the admin's wide URL box

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        try:
            services.endpoint_validate(
                url=data.get("url", ""), events=data.get("events"), secret=data.get("secret", ""),
                tenant=data.get("tenant") if not self.instance.pk else None,
            )
        except WebhookError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


def _secret_page(admin_site, request, rows: list[tuple[Endpoint, str]], title: str) -> TemplateResponse:
    context = {**admin_site.each_context(request), "title": title, "rows": rows}
    response = TemplateResponse(request, SECRET_TEMPLATE, context)
    response["Cache-Control"] = "no-store"
    return response


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    # Narrow enough that health (enabled, failures, last success) shows without scrolling sideways.
    list_display = ["url", "owner", "enabled", "consecutive_failures", "last_success_at", "events_text",
                    "created_at"]
    list_filter = ["enabled"]
    search_fields = ["url", "description", "tenant__subdomain"]
    list_select_related = ["tenant"]
    raw_id_fields = ["tenant"]
    actions = ["rotate_secret", "disable", "enable"]
    readonly = ["enabled", "disabled_reason", "registered_by_key", "created_by", "created_at",
                "consecutive_failures", "failing_since", "last_success_at", "deliveries_link"]

    @admin.display(description="owner")
    def owner(self, obj: Endpoint) -> str:
        return obj.tenant.subdomain if obj.tenant else "platform (every shop)"

    @admin.display(description="events")
    def events_text(self, obj: Endpoint) -> str:
        return ", ".join(obj.events) if obj.events else "all"

    @admin.display(description="API key")
    def registered_by_key(self, obj: Endpoint) -> str:
        if obj.api_key_id is None:
            return "- (made in the staff console)"
        return str(obj.api_key)

    @admin.display(description="deliveries")
    def deliveries_link(self, obj: Endpoint):
        if not obj.pk:
            return "-"
        return format_html('<a href="{}?endpoint__id__exact={}">deliveries</a>',
                           admin_path(Delivery, "changelist"), obj.pk)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["tenant", "url", "description", "events", "secret"]
        return ["tenant", "url", "description", "events", *self.readonly]

    def get_readonly_fields(self, request, obj=None):
        # The owner decides whose events it hears: fixed once made (make another endpoint instead).
        return [] if obj is None else ["tenant", *self.readonly]

    def get_form(self, request, obj=None, change=False, **kwargs):
        readonly = self.get_readonly_fields(request, obj)
        kwargs["fields"] = [f for f in self.get_fields(request, obj) if f not in readonly]
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request, obj, form, change):
        # The form's clean() ran the services' validation, so these do not refuse.
        data, actor = form.cleaned_data, Actor.staff(request.user)
        if change:
            services.endpoint_update(endpoint=Endpoint.objects.get(pk=obj.pk), actor=actor,
                                     url=data["url"], events=data["events"],
                                     description=data.get("description", ""))
            return
        created = services.endpoint_create(
            url=data["url"], actor=actor, tenant=data.get("tenant"), events=data["events"],
            description=data.get("description", ""), secret=data.get("secret", ""),
        )
        obj.pk = created.endpoint.pk
        request._webhook_secret = created.secret  # for response_add only; never stored

    def response_add(self, request, obj, post_url_continue=None):
        secret = getattr(request, "_webhook_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        return _secret_page(self.admin_site, request, [(obj, secret)], "Webhook endpoint created")

    def delete_model(self, request, obj):
        services.endpoint_delete(endpoint=obj, actor=Actor.staff(request.user))

    def delete_queryset(self, request, queryset):
        for endpoint in queryset:
            services.endpoint_delete(endpoint=endpoint, actor=Actor.staff(request.user))

    @admin.action(description="Rotate the signing secret (the old one keeps signing a while)",
                  permissions=["change"])
    def rotate_secret(self, request, queryset):
        actor = Actor.staff(request.user)
        rows = [(e, services.endpoint_rotate_secret(endpoint=e, actor=actor)) for e in queryset]
        return _secret_page(self.admin_site, request, rows, "New webhook secrets")

    @admin.action(description="Disable (stop sending)", permissions=["change"])
    def disable(self, request, queryset):
        actor = Actor.staff(request.user)
        done = sum(services.endpoint_disable(endpoint=e, actor=actor, reason=f"disabled by {actor.name}")
                   for e in queryset)
        self.message_user(request, f"{done} endpoint(s) disabled.")

    @admin.action(description="Enable (send again)", permissions=["change"])
    def enable(self, request, queryset):
        actor = Actor.staff(request.user)
        done = sum(services.endpoint_enable(endpoint=e, actor=actor) for e in queryset)
        self.message_user(request, f"{done} endpoint(s) enabled; re-send what failed meanwhile.")


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    fields = ("number", "at", "succeeded", "response_code", "duration_ms", "error", "response_body")
    readonly_fields = ("number", "at", "succeeded", "response_code", "duration_ms", "error", "response_body")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        # Attempts are part of their delivery (no page of their own, no role lists them): whoever
        # may read the delivery reads its attempts.
        return request.user.has_perm("webhooks.view_delivery")


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # The outcome first: the endpoint URL is the widest column.
    list_display = ["created", "event_type", "status", "attempts", "response_code", "next_attempt",
                    "endpoint", "tenant_label", "last_error"]
    list_filter = ["status", "event_type"]
    search_fields = ["message__id", "endpoint__url", "tenant_label"]
    list_select_related = ["endpoint__tenant", "message"]
    readonly_fields = ("message_id", "event_type", "endpoint", "tenant_label", "status", "attempts",
                       "next_attempt_at", "last_attempt_at", "response_code", "last_error", "resend_of",
                       "created_at", "delivered_at", "payload")
    fields = readonly_fields
    inlines = [AttemptInline]
    actions = ["resend"]

    @admin.display(description="created (UTC)", ordering="created_at")
    def created(self, obj: Delivery) -> str:
        return f"{obj.created_at:%Y-%m-%d %H:%M:%S}"

    @admin.display(description="next attempt (UTC)", ordering="next_attempt_at")
    def next_attempt(self, obj: Delivery) -> str:
        # Compact, so the endpoint column still fits on the screen.
        return f"{obj.next_attempt_at:%Y-%m-%d %H:%M}" if obj.next_attempt_at else "-"

    @admin.display(description="payload")
    def payload(self, obj: Delivery):
        # The exact bytes that were signed, wrapped rather than cut off at the page's edge.
        return format_html('<pre style="white-space:pre-wrap;overflow-wrap:anywhere;margin:0">{}</pre>',
                           services.message_body(obj.message).decode())

    def has_resend_permission(self, request) -> bool:
        return request.user.has_perm("webhooks.resend_delivery")

    @admin.action(description="Re-send (a new delivery of the same message)", permissions=["resend"])
    def resend(self, request, queryset):
        actor, done = Actor.staff(request.user), 0
        for delivery in queryset.select_related("endpoint__tenant", "message"):
            try:
                services.delivery_resend(delivery=delivery, actor=actor)
                done += 1
            except WebhookError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"{done} deliver(y/ies) queued to be sent again.")
