"""Staff users and admin clients for the staff-console tests (admin, roles, browser)."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from core.roles import roles_sync

STAFF_PASSWORD = "correct-horse-battery-staple-42"


def staff_user(username: str, group: str | None = None, *, superuser: bool = False):
    roles_sync()
    user = get_user_model().objects.create_user(
        username, email=f"{username}@platform.test", password=STAFF_PASSWORD,
        is_staff=True, is_superuser=superuser,
    )
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


def admin_client(user) -> Client:
    """A test client on the control plane host (the admin answers nowhere else)."""
    client = Client(HTTP_HOST=settings.PLATFORM_ADMIN_HOST)
    client.force_login(user)
    return client


def admin_url(name: str, *args) -> str:
    # The admin lives in the control plane's urlconf, not the default (tenant) one.
    return reverse(name, urlconf=settings.PUBLIC_SCHEMA_URLCONF, args=args)
