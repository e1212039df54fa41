"""Login security: failed-login throttling (django-axes), the staff login form, the login audit.

Two realms share one axes store (its tables are in the public schema): the admin host (staff,
public auth_user) and every shop host (each shop's owners, in the shop's own auth_user). User
ids and names repeat across schemas, so every attempt is counted under "<schema>/<username>":
ten failures on one shop lock that name on that shop only, never on another shop or the admin.
"""

import logging
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.signals import user_locked_out
from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.core.exceptions import PermissionDenied, ValidationError
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views.defaults import permission_denied
from django_tenants.utils import get_public_schema_name

from core import clientip
from core.audit import Action, Actor, audit_record
from core.db import connection
from core.models import AuditEvent

log = logging.getLogger(__name__)

# The username field of both login forms (admin and shop); axes reads the same one.
USERNAME_FIELD = "username"
# Longest attempted username kept in the audit trail (the form field allows much more).
_NAME_LIMIT = 150


# --- who and where ----------------------------------------------------------------------------


def client_ip(request: HttpRequest) -> str | None:
    """AXES_CLIENT_IP_CALLABLE: the platform's one rule
    (core.clientip: X-Forwarded-For only through TRUSTED_PROXIES). None when it cannot be told,
    which axes stores as an unknown address."""
    return clientip.client_ip(request) or None


def login_scope(request: HttpRequest | None) -> str:
    """The schema whose users this request logs in: "public" on the admin host, the shop's otherwise."""
    tenant = getattr(request, "tenant", None)
    return str(getattr(tenant, "schema_name", None) or connection.schema_name)


def is_admin_realm(request: HttpRequest | None) -> bool:
    return login_scope(request) == get_public_schema_name()


def lockout_username(request: HttpRequest, credentials: dict | None) -> str | None:
    """AXES_USERNAME_CALLABLE: the attempted username, prefixed with the realm it belongs to."""
    field = USERNAME_FIELD
    username = (credentials or {}).get(field) if credentials else None
    if username is None and request is not None:
        username = getattr(request, "POST", {}).get(field)
    if not username:
        return None
    return f"{login_scope(request)}/{username}"[:255]


# --- the throttle --------------------------------------------------------------------------------


class LoginThrottleBackend(AxesStandaloneBackend):
    """axes' gate, first in AUTHENTICATION_BACKENDS: refuses any login while its key is locked out.

    Throttling is about HTTP logins; authenticate() called without a request (a shell, the test
    client's login()) is not counted and not refused, where stock axes would raise.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def lockout_minutes() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)


def lockout_response(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: a page that says how long to wait and whom to ask, with status 429."""
    minutes = lockout_minutes()
    staff = is_admin_realm(request)
    # On the admin host the page wears the admin login's look (site header, stylesheets).
    context = dict(admin.site.each_context(request)) if staff else {}
    context |= {
        "minutes": minutes,
        "staff": staff,
        "support": settings.LOGIN_SUPPORT_CONTACT,
        "limit": settings.AXES_FAILURE_LIMIT,
        "per_ip": settings.LOGIN_LOCKOUT_BY == "user_and_ip",
    }
    response = HttpResponse(render_to_string("core/login_locked_out.html", context, request), status=429)
    response["Retry-After"] = str(minutes * 60)
    response["Cache-Control"] = "no-store"
    return response


# --- the staff login form (password, then the TOTP code when the user has a device) -----------


class CodeInput(forms.TextInput):
    """A code field that comes back empty after an error: a wrong or used code is never offered again."""

    def format_value(self, value):
        return None


class StaffAuthenticationForm(AdminAuthenticationForm):
    """The admin login: username, password, and the authenticator code for enrolled staff."""

    otp_token = forms.CharField(
        label="Two-factor code",
        required=False,
        max_length=12,
        help_text="Only if you have set up two-factor: the 6-digit code your authenticator app shows now.",
        widget=CodeInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    def clean(self):
        cleaned = super().clean()  # password first; axes counts those failures itself
        user = self.get_user()
        if user is None:
            return cleaned
        from core.two_factor import confirmed_devices, device_verify

        devices = confirmed_devices(user)
        if not devices:
            return cleaned
        token = (cleaned.get("otp_token") or "").strip().replace(" ", "")
        if not token:
            raise ValidationError(
                "This account has two-factor authentication: enter the 6-digit code from your "
                "authenticator app as well.",
                code="token_required",
            )
        device, problem = device_verify(devices, token)
        if device is None:
            # A wrong code counts as a failed login, so axes throttles code guessing too.
            user_login_failed.send(
                sender=type(self),
                credentials={"username": user.get_username(), "two_factor": "wrong code"},
                request=self.request,
            )
            raise ValidationError(problem, code="invalid_token")
        # django_otp's user_logged_in receiver marks the session verified with this device.
        user.otp_device = device  # type: ignore[attr-defined]
        return cleaned


# --- the login audit ------------------------------------------------------------------------------


def _routed(request: HttpRequest | None) -> bool:
    # Only requests that came through the tenant router are real HTTP logins; the test client's
    # force_login() builds a bare request, and stays out of the trail as it stays out of axes.
    return request is not None and hasattr(request, "tenant")


def _event(request: HttpRequest, *, staff_action: Action, owner_action: Action, who: str, **details) -> None:
    details = {k: v for k, v in details.items() if v not in (None, "")}
    details["ip"] = clientip.client_ip(request)
    details["host"] = request.get_host()
    if is_admin_realm(request):
        audit_record(actor=Actor(AuditEvent.ActorType.STAFF, who), action=staff_action, target=who,
                     details=details)
        return
    # The Tenant model without importing tenants (core imports no app).
    tenant_model: Any = AuditEvent._meta.get_field("tenant").related_model
    route = getattr(request, "tenant", None)
    tenant = tenant_model.objects.filter(pk=getattr(route, "id", None) or None).first()
    audit_record(actor=Actor.tenant_user(who), action=owner_action, tenant=tenant, target=who,
                 details=details)


@receiver(user_logged_in, dispatch_uid="core.login.logged_in")
def _audit_logged_in(sender, request, user, **kwargs) -> None:
    if not _routed(request):
        return
    device = getattr(user, "otp_device", None)
    _event(request, staff_action=Action.STAFF_LOGGED_IN, owner_action=Action.OWNER_LOGGED_IN,
           who=user.get_username(), two_factor="yes" if device is not None else "no")


@receiver(user_logged_out, dispatch_uid="core.login.logged_out")
def _audit_logged_out(sender, request, user, **kwargs) -> None:
    if user is None or not _routed(request):
        return
    _event(request, staff_action=Action.STAFF_LOGGED_OUT, owner_action=Action.OWNER_LOGGED_OUT,
           who=user.get_username())


@receiver(user_login_failed, dispatch_uid="core.login.login_failed")
def _audit_login_failed(sender, credentials, request=None, **kwargs) -> None:
    if not _routed(request):
        return
    # Only the username is read: Django has already masked the password, and codes never get here.
    who = str(credentials.get(USERNAME_FIELD) or "")[:_NAME_LIMIT]
    reason = "wrong two-factor code" if credentials.get("two_factor") else "wrong username or password"
    _event(request, staff_action=Action.STAFF_LOGIN_FAILED, owner_action=Action.OWNER_LOGIN_FAILED,
           who=who, reason=reason)


@receiver(user_locked_out, dispatch_uid="core.login.locked_out")
def _audit_locked_out(sender, request, username, ip_address, **kwargs) -> None:
    # axes sends this on every failure past the limit; the trail records the lockout once.
    failures = getattr(request, "axes_failures_since_start", None)
    if not _routed(request) or failures != settings.AXES_FAILURE_LIMIT:
        return
    who = (username or "").split("/", 1)[-1][:_NAME_LIMIT]
    _event(request, staff_action=Action.STAFF_LOCKED_OUT, owner_action=Action.OWNER_LOCKED_OUT,
           who=who, minutes=lockout_minutes(), failures=settings.AXES_FAILURE_LIMIT)


# --- the lockouts admin (replaces axes' own: no form data shown, unlocking is audited) -----------


class LoginAttemptAdmin(admin.ModelAdmin):
    """Failed-login counters. View: who is being guessed at, from where. Delete: lift a lockout."""

    list_display = ["username", "ip_address", "failures_since_start", "attempt_time", "locked"]
    search_fields = ["username", "ip_address"]
    list_filter = ["attempt_time"]
    fields = readonly_fields = ("username", "ip_address", "user_agent", "path_info",
                                "failures_since_start", "attempt_time")

    @admin.display(boolean=True, description="Locked out")
    def locked(self, obj) -> bool:
        return obj.failures_since_start >= settings.AXES_FAILURE_LIMIT

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def delete_model(self, request, obj):
        self._cleared(request, [obj])
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        self._cleared(request, list(queryset))
        super().delete_queryset(request, queryset)

    def _cleared(self, request, attempts) -> None:
        for attempt in attempts:
            audit_record(actor=Actor.staff(request.user), action=Action.LOGIN_LOCKOUT_CLEARED,
                         target=attempt.username,
                         details={"ip": attempt.ip_address or "", "failures": attempt.failures_since_start})


def staff_access_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler403 of the control plane's URLconf: a staff login refused a page or an action is
    audited (who, what, from where), then gets Django's own 403 page."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        audit_record(
            actor=Actor.staff(user),
            action=Action.STAFF_ACCESS_DENIED,
            target=request.path[:200],
            details={
                "method": request.method,
                "ip": clientip.client_ip(request),
                "reason": str(exception or "")[:200],
            },
        )
    return permission_denied(request, exception or PermissionDenied())
