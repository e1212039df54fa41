"""API keys in the staff console: make one (the key is shown once, on the page that follows),
list them with their last use, revoke. Keys are never edited or deleted."""

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone

from api.errors import ApiError
from api.models import DEFAULT_SCOPES, SCOPES, APIKey
from api.services import apikey_create, apikey_revoke
from core.audit import Actor


class APIKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(s, f"{s}: {what}") for s, what in SCOPES.items()], initial=DEFAULT_SCOPES,
        widget=forms.CheckboxSelectMultiple,
        help_text="backups:restore replaces a shop's data: tick it only for a key that must restore.",
    )
    expires_at = forms.DateTimeField(required=False, help_text="Empty: never expires (revoke it instead).")

    class Meta:
        model = APIKey
        fields = ["name", "scopes", "expires_at"]

    def clean_expires_at(self):
        value = self.cleaned_data.get("expires_at")
        if value is not None and value <= timezone.now():
            raise forms.ValidationError("Pick a time in the future, or leave it empty.")
        return value


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    form = APIKeyForm
    list_display = ["prefix", "name", "kind", "tenant", "scope_list", "created_at", "last_used_at",
                    "expires_at", "state"]
    list_filter = ["kind"]
    search_fields = ["prefix", "name", "tenant__subdomain"]
    actions = ["revoke_keys"]
    readonly_fields = ["prefix", "kind", "tenant", "scopes", "created_by", "created_at", "last_used_at",
                       "expires_at", "revoked_at"]

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

    @admin.display(description="state")
    def state(self, obj: APIKey) -> str:
        if obj.revoked_at:
            return "revoked"
        return "expired" if not obj.usable() else "active"

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
            "opts": self.model._meta, "title": "API key made",
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
