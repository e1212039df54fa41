"""The forms of the tenants console: provisioning a shop, renaming one, and the inputs of the
lifecycle actions (suspend, change plan, deprovision). Services make the decisions that count."""

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.html import escape

from core.audit import Actor
from tenants import services
from tenants.errors import TenantValidationError
from tenants.models import Plan, Tenant
from tenants.validation import email_normalise, subdomain_normalise


class ProvisionTenantForm(forms.ModelForm):
    """Collects a new shop; `tenants.services.tenant_request` is the validation that counts."""

    actor: Actor  # bound per request by TenantAdmin.get_form

    # Plain text fields, so the service's own messages (which say what to fix) are the ones shown.
    subdomain = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"class": "vTextField"}))
    owner_email = forms.CharField(
        max_length=254, label="Owner email", widget=forms.TextInput(attrs={"class": "vTextField"}),
        help_text="The owner gets an account in the shop; hand over a set-password link with the "
        "action 'Issue owner set-password link'.",
    )

    class Meta:
        model = Tenant
        fields = ["subdomain", "name", "plan", "owner_email"]
        widgets = {"name": forms.TextInput(attrs={"class": "vTextField"})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The admin renders help texts as HTML, so this one is escaped here.
        self.fields["subdomain"].help_text = escape(
            "3-63 characters: a-z, 0-9 and hyphens. The shop answers at "
            f"<subdomain>.{settings.PLATFORM_BASE_DOMAIN}; it cannot be changed later."
        )
        plan_field = self.fields["plan"]
        assert isinstance(plan_field, forms.ModelChoiceField)  # the ForeignKey's form field
        plan_field.queryset = Plan.objects.filter(is_active=True)
        self.fields["plan"].help_text = "Only active plans are offered."

    def clean_subdomain(self):
        try:
            return subdomain_normalise(self.cleaned_data["subdomain"])
        except TenantValidationError as exc:
            raise ValidationError(str(exc)) from None

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not name:
            raise ValidationError("The shop needs a name, e.g. Acme Shoes.")
        return name

    def clean_owner_email(self):
        try:
            return email_normalise(self.cleaned_data["owner_email"])
        except TenantValidationError as exc:
            raise ValidationError(str(exc)) from None

    def clean(self):
        super().clean()
        cleaned = self.cleaned_data  # what ModelForm.clean() returns (typed by django-stubs as optional)
        if self.errors:
            return cleaned
        try:
            tenant = services.tenant_request(
                subdomain=cleaned["subdomain"], name=cleaned["name"], plan=cleaned["plan"],
                owner_email=cleaned["owner_email"], actor=self.actor,
            )
        except TenantValidationError as exc:
            # The fields above passed the same rules; what is left is about the subdomain
            # (taken, its host already routed, or its schema name left in the database).
            self.add_error("subdomain", str(exc))
            return cleaned
        # The requested row is the instance the admin "saves" (it is saved already).
        self.instance = tenant
        return cleaned


class TenantChangeForm(forms.ModelForm):
    class Meta:
        model = Tenant
        fields = ["name"]


class SuspendForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Recorded in the audit log and kept on the tenant; visitors see a 'suspended' page.",
    )

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise ValidationError("Give a reason for the suspension, e.g. unpaid invoice.")
        return reason


class ChangePlanForm(forms.Form):
    plan = forms.ModelChoiceField(
        queryset=Plan.objects.filter(is_active=True),
        help_text="Tenants whose usage exceeds the new plan's limits are not moved; you will see why.",
    )


class DeprovisionForm(forms.Form):
    confirm = forms.CharField(
        label="Type to confirm",
        widget=forms.TextInput(attrs={"size": 60, "autocomplete": "off"}),
    )

    def __init__(self, *args, subdomains: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.subdomains = subdomains
        self.fields["confirm"].help_text = (
            "Type the subdomain of every tenant listed, separated by spaces: " + " ".join(subdomains)
        )

    def clean_confirm(self):
        typed = self.cleaned_data["confirm"].replace(",", " ").split()
        if sorted(typed) != sorted(self.subdomains):
            raise ValidationError(
                "Confirmation did not match; type exactly these subdomains: " + " ".join(self.subdomains)
            )
        return typed
