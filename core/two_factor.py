"""TOTP two-factor for staff (django-otp): self-enrollment, verification, and STAFF_REQUIRE_2FA.

A staff user enrolls on /admin/2fa/setup/ (URL name `staff_2fa_setup`): the page makes a new,
unconfirmed device and shows its secret once (QR code and text); a correct code confirms it and
marks the session verified. From then on the admin login asks for a code. With STAFF_REQUIRE_2FA
on, superusers and "Platform operators" are sent to that page until they have a device, and
any staff session that was not verified with a code is signed out.
"""

import base64
import os
from base64 import b32encode
from functools import lru_cache

import segno
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import site as admin_site
from django.contrib.auth import logout
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models.signals import post_init, post_save, pre_save
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.safestring import mark_safe
from django_otp import login as otp_login
from django_otp.middleware import OTPMiddleware
from django_otp.plugins.otp_totp.models import TOTPDevice

from core import clientip
from core.audit import Action, Actor, audit_record
from core.login import CodeInput, is_admin_realm
from core.roles import may_change_anything

SETUP_URL_NAME = "staff_2fa_setup"


# --- TOTP secrets encrypted at rest ------------------------------------------------------------------
# django-otp keeps the secret as hex in otp_totp_totpdevice.key. Here it is sealed on every save
# (AES-256-GCM, key derived from the newest PLATFORM_ENCRYPTION_KEYS entry) and opened on every
# load (any listed key), so a database dump or backup alone gives no usable secrets, and rotating
# the keys re-seals a device the next time it is used. 20-byte secrets seal to 67 characters,
# inside the column's 80 (why not core.crypto: a Fernet token of the same secret is ~120).

_SEALED = "g1:"
_AAD = b"platform staff totp secret"


@lru_cache(maxsize=8)
def _aes_key(fernet_key: str) -> bytes:
    raw = base64.urlsafe_b64decode(fernet_key.strip().encode())
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_AAD).derive(raw)


def _aes_keys() -> list[bytes]:
    if not settings.PLATFORM_ENCRYPTION_KEYS:
        raise ImproperlyConfigured(
            "PLATFORM_ENCRYPTION_KEYS is empty: set it (see .env.example) before staff set up "
            "two-factor; it encrypts their TOTP secrets."
        )
    return [_aes_key(k) for k in settings.PLATFORM_ENCRYPTION_KEYS]


def secret_seal(hex_secret: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(_aes_keys()[0]).encrypt(nonce, bytes.fromhex(hex_secret), _AAD)
    return _SEALED + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def secret_open(sealed: str) -> str | None:
    """The hex secret, or None when no configured key opens it."""
    blob = base64.urlsafe_b64decode(sealed[len(_SEALED):] + "==")
    for key in _aes_keys():
        try:
            return AESGCM(key).decrypt(blob[:12], blob[12:], _AAD).hex()
        except InvalidTag:
            continue
    return None


@receiver(pre_save, sender=TOTPDevice, dispatch_uid="core.two_factor.seal")
def _seal_before_save(sender, instance: TOTPDevice, **kwargs) -> None:
    if not instance.key.startswith(_SEALED):
        instance.__dict__["_plain_key"] = instance.key
        instance.key = secret_seal(instance.key)


@receiver(post_save, sender=TOTPDevice, dispatch_uid="core.two_factor.unseal_after_save")
def _unseal_after_save(sender, instance: TOTPDevice, **kwargs) -> None:
    plain = instance.__dict__.pop("_plain_key", None)
    if plain is not None:
        instance.key = plain


@receiver(post_init, sender=TOTPDevice, dispatch_uid="core.two_factor.unseal")
def _unseal_after_load(sender, instance: TOTPDevice, **kwargs) -> None:
    sealed = instance.__dict__.get("key")  # absent when deferred: loading it here would recurse
    if sealed and sealed.startswith(_SEALED):
        plain = secret_open(sealed)
        if plain is None:
            instance.__dict__["secret_unreadable"] = True
        else:
            instance.key = plain


def confirmed_devices(user) -> list[TOTPDevice]:
    return list(TOTPDevice.objects.filter(user=user, confirmed=True).order_by("id"))


def device_verify(devices: list[TOTPDevice], token: str) -> tuple[TOTPDevice | None, str]:
    """The device that accepts `token` (each code works once), or None and what to tell the user."""
    if not (token.isdigit() and len(token) in (6, 8)):
        return None, "Enter the 6-digit code your authenticator app shows now (digits only)."
    if devices and all(d.__dict__.get("secret_unreadable") for d in devices):
        return None, (
            "Your two-factor device can no longer be read (the platform's encryption keys changed): "
            "ask a superuser to delete it (Admin: Two-factor devices › TOTP devices), then set it up again."
        )
    waits: list = []
    for candidate in devices:
        with transaction.atomic():
            device = TOTPDevice.objects.select_for_update().get(pk=candidate.pk)
            if device.__dict__.get("secret_unreadable"):
                continue
            allowed, extra = device.verify_is_allowed()
            if not allowed:
                waits.append((extra or {}).get("locked_until"))
                continue
            if device.verify_token(token):
                return device, ""
    if waits and len(waits) == len(devices) and all(waits):
        seconds = max(1, int((max(w for w in waits if w) - timezone.now()).total_seconds()) + 1)
        return None, (
            f"After a wrong code, codes are refused for a short while: wait {seconds} second"
            f"{'' if seconds == 1 else 's'}, then enter the code your authenticator app shows."
        )
    return None, (
        "That code is wrong or has already been used. Enter the current code from your "
        "authenticator app (check that the phone's clock is set automatically)."
    )


def staff_must_enroll(user) -> bool:
    """With STAFF_REQUIRE_2FA, whoever may change anything may not use the admin without a device:
    superusers, operators, and anyone granted a changing permission one by one (by what they may
    do, not by group name, so a hand-made role cannot slip past)."""
    if not settings.STAFF_REQUIRE_2FA:
        return False
    return bool(user.is_superuser or may_change_anything(user))


def staff_2fa_enroll(*, request: HttpRequest, device: TOTPDevice, token: str) -> str:
    """Confirm a pending device with a code; verify the session; audit. Returns "" or the problem."""
    confirmed, problem = device_verify([device], token)
    if confirmed is None:
        return problem
    with transaction.atomic():
        confirmed.confirmed = True
        confirmed.save(update_fields=["confirmed"])
        # Any other pending secret shown earlier is void now.
        TOTPDevice.objects.filter(user=request.user, confirmed=False).delete()
        audit_record(
            actor=Actor.staff(request.user), action=Action.STAFF_2FA_ENROLLED,
            target=request.user.get_username(),
            details={"device": confirmed.name, "ip": clientip.client_ip(request)},
        )
    otp_login(request, confirmed)
    return ""


class TokenForm(forms.Form):
    otp_token = forms.CharField(
        label="Code from the app", max_length=12,
        widget=CodeInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )


def _pending(user) -> TOTPDevice:
    # A new secret on every visit: a secret is shown once and never again.
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    return TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)


def _setup_page(request: HttpRequest, *, device: TOTPDevice | None, form: TokenForm, status: int = 200):
    context = dict(admin_site.each_context(request), title="Two-factor authentication", form=form,
                   device=device, required=staff_must_enroll(request.user),
                   enrolled=confirmed_devices(request.user))
    if device is not None:
        context["qr_svg"] = mark_safe(segno.make(device.config_url, error="m").svg_inline(scale=4))
        context["secret"] = secret = b32encode(device.bin_key).decode()
        # In groups of four, as authenticator apps show keys: easier to type and to check.
        context["secret_display"] = " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))
    return TemplateResponse(request, "core/two_factor_setup.html", context, status=status)


def staff_2fa_setup_view(request: HttpRequest) -> HttpResponse:
    """Any active staff user, for their own account only (admin_view checks login and is_staff)."""
    user = request.user
    if confirmed_devices(user):
        return _setup_page(request, device=None, form=TokenForm())
    if request.method != "POST":
        return _setup_page(request, device=_pending(user), form=TokenForm())
    form = TokenForm(request.POST)
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-id").first()
    if device is None:
        messages.error(request, "That setup page had expired: scan this new code instead.")
        return _setup_page(request, device=_pending(user), form=TokenForm(), status=400)
    if not form.is_valid():
        return _setup_page(request, device=device, form=form, status=400)
    problem = staff_2fa_enroll(request=request, device=device, token=form.cleaned_data["otp_token"].strip())
    if problem:
        form.add_error("otp_token", problem)
        return _setup_page(request, device=device, form=form, status=400)
    messages.success(request, "Two-factor authentication is on: the admin login will ask for a code.")
    return HttpResponseRedirect(reverse("admin:index"))


staff_2fa_setup = admin_site.admin_view(staff_2fa_setup_view)


class AdminOTPMiddleware(OTPMiddleware):
    """django-otp's middleware (``request.user.is_verified()``) on the admin host only: shop owners
    have no second factor, and a storefront request should not pay for wrapping its user."""

    async_capable = False  # gunicorn's sync workers; the admin host needs no async path

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if hasattr(request, "tenant") and is_admin_realm(request):
            self._install_lazy_accessors(request)
        return self.get_response(request)


class StaffTwoFactorMiddleware:
    """On the admin host: a staff session that has not proved a second factor when it should have.

    - the user has a confirmed device but this session was not verified with a code (it began
      before the device was added): signed out, back to the login page, which asks for the code;
    - STAFF_REQUIRE_2FA, an operator or superuser without a device: sent to the setup page.
    Everything else (support staff without a device, STAFF_REQUIRE_2FA off) passes untouched.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # The host first: a shop's request never resolves the session's user here (storefront
        # pages stay one statement a request).
        if not hasattr(request, "tenant") or not is_admin_realm(request):
            return self.get_response(request)
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or not user.is_staff or user.is_verified():
            return self.get_response(request)
        urlconf = settings.PUBLIC_SCHEMA_URLCONF
        setup = reverse(SETUP_URL_NAME, urlconf=urlconf)
        exempt = {setup, reverse("admin:logout", urlconf=urlconf), reverse("admin:login", urlconf=urlconf)}
        if request.path in exempt:
            return self.get_response(request)
        if confirmed_devices(user):
            logout(request)
            messages.warning(request, "Sign in again with your two-factor code.")
            login = reverse("admin:login", urlconf=urlconf)
            return HttpResponseRedirect(f"{login}?{urlencode({'next': request.get_full_path()})}")
        if staff_must_enroll(user):
            messages.warning(request, "Set up two-factor authentication before using the admin.")
            return HttpResponseRedirect(setup)
        return self.get_response(request)


class TOTPDeviceAdmin(admin.ModelAdmin):
    """Staff devices, for superusers: look, or delete one to reset a lost phone. Never the secret."""

    list_display = ["user", "name", "confirmed", "created_at", "last_used_at"]
    list_filter = ["confirmed"]
    search_fields = ["user__username", "user__email"]
    fields = readonly_fields = ("user", "name", "confirmed", "created_at", "last_used_at",
                                "throttling_failure_count")

    def has_add_permission(self, request, obj=None):
        return False  # devices are made by their owner on the setup page, which shows the secret

    def has_change_permission(self, request, obj=None):
        return False

    def delete_model(self, request, obj):
        self._removed(request, [obj])
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        self._removed(request, list(queryset.select_related("user")))
        super().delete_queryset(request, queryset)

    def _removed(self, request, devices) -> None:
        for device in devices:
            audit_record(actor=Actor.staff(request.user), action=Action.STAFF_2FA_REMOVED,
                         target=device.user.get_username(), details={"device": device.name})


def admin_site_setup(site: admin.AdminSite) -> None:
    """The admin's login asks for the code; our admins for devices and lockouts replace the libraries'
    (django-otp's can show secrets; axes' shows raw form data and has an undeclared action)."""
    from axes.models import AccessAttempt

    from core.login import LoginAttemptAdmin, StaffAuthenticationForm

    site.login_form = StaffAuthenticationForm
    site.login_template = "core/admin_login.html"
    for model, model_admin in ((TOTPDevice, TOTPDeviceAdmin), (AccessAttempt, LoginAttemptAdmin)):
        if site.is_registered(model):
            site.unregister(model)
        site.register(model, model_admin)
