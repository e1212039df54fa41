"""API keys in the staff console: make one (the key is shown once, on the page that follows),
list them with their last use, revoke. Keys are never edited or deleted."""

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html

from api.errors import ApiError
from api.models import DEFAULT_SCOPES, SCOPES, APIKey
from api.services import apikey_create, apikey_revoke
from core.audit import Actor


class APIKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(s, f"{s}: {what}") for s, what in SCOPES.items()], initial=DEFAULT_SCOPES,
        # "radiolist": the admin's own class for choice lists, so each label takes the row's width.
        widget=forms.CheckboxSelectMultiple(attrs={"class": "radiolist"}),
        help_text="backups:restore replaces a shop's data: tick it only for a key that must restore.",
    )
    expires_at = forms.DateTimeField(
        required=False, label="Expires at (UTC)",
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Empty: never expires (revoke it instead).",
    )

    class Meta:
        model = APIKey
        fields = ["name", "scopes", "expires_at"]
        help_texts = {"name": "What uses the key (\"billing backend\", \"CI deploys\"): it names the key in "
                              "lists and in the audit log."}

    def clean_expires_at(self):
        value = self.cleaned_data.get("expires_at")
        if value is not None and value <= timezone.now():
            raise forms.ValidationError("Pick a time in the future, or leave it empty.")
        return value


def _when(value, empty: str) -> str:
    # Compact times keep the list one screen wide.
    return f"{value:%Y-%m-%d %H:%M}" if value else empty


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    form = APIKeyForm
    # Narrow enough for the state and last use to show without scrolling sideways.
    list_display = ["prefix", "name", "state", "owner", "scope_list", "last_used", "expires", "created"]
    list_filter = ["kind"]
    list_select_related = ["tenant"]
    search_fields = ["prefix", "name", "tenant__subdomain"]
    actions = ["revoke_keys"]
    readonly_fields = ["prefix", "state", "kind", "tenant", "scope_list", "created_by", "created_at",
                       "last_used_at", "expires_at", "revoked_at"]

    def get_fields(self, request, obj=None):
        return ["name", "scopes", "expires_at"] if obj is None else ["name", *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else ["name", *self.readonly_fields]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="scopes")
    def scope_list(self, obj: APIKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="last used (UTC)", ordering="last_used_at")
    def last_used(self, obj: APIKey) -> str:
        return _when(obj.last_used_at, "never")

    @admin.display(description="expires (UTC)", ordering="expires_at")
    def expires(self, obj: APIKey) -> str:
        return _when(obj.expires_at, "never")

    @admin.display(description="made (UTC)", ordering="created_at")
    def created(self, obj: APIKey) -> str:
        return _when(obj.created_at, "-")

    @admin.display(description="owner", ordering="tenant__subdomain")
    def owner(self, obj: APIKey) -> str:
        return obj.tenant.subdomain if obj.tenant_id else "staff"

    @admin.display(description="state")
    def state(self, obj: APIKey) -> str:
        if obj.revoked_at:
            return format_html('<span style="color:#ba2121">revoked {}</span>', f"{obj.revoked_at:%Y-%m-%d}")
        if not obj.usable():
            return format_html('<span style="color:{}">expired</span>', "#ba2121")
        return "active"

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        try:
            new = apikey_create(name=data["name"], scopes=data["scopes"], expires_at=data.get("expires_at"),
                                actor=Actor.staff(request.user))
        except ApiError as exc:  # the form checks the same; a race (a past expiry) lands here
            raise forms.ValidationError(str(exc)) from exc
        obj.__dict__.update({k: v for k, v in new.key.__dict__.items() if not k.startswith("_")})
        obj._state.adding = False
        request._api_token = new.token

    def response_add(self, request, obj, post_url_continue=None):
        # The key itself goes into this page only: never a message cookie, never the session.
        response = TemplateResponse(request, "admin/api/apikey/created.html", {
            **self.admin_site.each_context(request), "key": obj, "token": request._api_token,
            "opts": self.model._meta, "title": f"API key {obj.prefix} ({obj.name})",
        })
        response["Cache-Control"] = "no-store"
        return response

    def has_revoke_apikey_permission(self, request) -> bool:
        return request.user.has_perm("api.revoke_apikey")

    @admin.action(description="Revoke selected keys", permissions=["revoke_apikey"])
    def revoke_keys(self, request, queryset):
        keys = [k for k in queryset if k.revoked_at is None]
        for key in keys:
            apikey_revoke(key=key, actor=Actor.staff(request.user))
        messages.success(request, f"{len(keys)} key(s) revoked.")
