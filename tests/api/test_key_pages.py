"""Where keys are made: the staff console (staff keys) and the owner's page (shop keys)."""

import re

import pytest
from django.test import Client

from api.models import APIKey
from api.services import token_sha256
from core.models import AuditEvent
from core.roles import OPERATORS, SUPPORT
from tests.api.conftest import ADMIN_HOST
from tests.domains.conftest import set_owner_password
from tests.staff import admin_client, admin_url, staff_user

pytestmark = pytest.mark.django_db


def test_operators_make_a_staff_key_shown_once_and_revoke_it(api_settings):
    operator = admin_client(staff_user("olivia", OPERATORS))
    form = operator.get(admin_url("admin:api_apikey_add"))
    assert form.status_code == 200 and b"backups:restore" in form.content
    # Every scope but backups:restore is ticked by default.
    assert re.search(rb'value="tenants:write"[^>]*checked', form.content)
    assert not re.search(rb'value="backups:restore"[^>]*checked', form.content)
    bad = operator.post(admin_url("admin:api_apikey_add"), {"name": "ci", "scopes": ["nope:all"]})
    assert bad.status_code == 200 and APIKey.objects.count() == 0
    made = operator.post(admin_url("admin:api_apikey_add"), {
        "name": "signup backend", "scopes": ["tenants:read", "tenants:write"]})
    assert made.status_code == 200 and "no-store" in made["Cache-Control"]
    token = re.search(rb'id="new-api-key"[^>]*>(plt_[^<]+)<', made.content).group(1).decode()
    key = APIKey.objects.get()
    assert key.token_sha256 == token_sha256(token) and key.scopes == ["tenants:read", "tenants:write"]
    # Never again: the list and the detail page show the prefix only.
    listing = operator.get(admin_url("admin:api_apikey_changelist"))
    assert key.prefix.encode() in listing.content and token.encode() not in listing.content
    detail = operator.get(admin_url("admin:api_apikey_change", key.pk))
    assert detail.status_code == 200 and token.encode() not in detail.content
    assert b"tenants:read, tenants:write" in detail.content and b"[&quot;tenants" not in detail.content
    revoked = operator.post(admin_url("admin:api_apikey_changelist"), {
        "action": "revoke_keys", "_selected_action": [key.pk]})
    assert revoked.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert f"revoked {key.revoked_at:%Y-%m-%d}".encode() in operator.get(
        admin_url("admin:api_apikey_changelist")).content
    assert list(AuditEvent.objects.filter(target=str(key)).values_list("action", "actor_type")) == [
        ("api_key.revoked", "staff"), ("api_key.created", "staff")]


def test_support_sees_keys_but_cannot_make_or_revoke_them(api_settings):
    support = admin_client(staff_user("sam", SUPPORT))
    assert support.get(admin_url("admin:api_apikey_changelist")).status_code == 200
    assert support.get(admin_url("admin:api_apikey_add")).status_code == 403
    posted = support.post(admin_url("admin:api_apikey_add"), {"name": "x", "scopes": ["tenants:read"]})
    assert posted.status_code == 403
    assert APIKey.objects.count() == 0


def owner(tenant) -> Client:
    client = Client(HTTP_HOST=f"{tenant.subdomain}.platform.test")
    password = set_owner_password(tenant)
    login = client.post("/account/login/", {"username": tenant.owner_email, "password": password})
    assert login.status_code == 302
    return client


def test_the_owner_makes_and_revokes_shop_keys_on_their_own_shop_only(api_settings, make_tenant):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    client = owner(acme)
    made = client.post("/account/api-keys/", {"name": "dashboard", "scopes": ["domains:read"]})
    assert made.status_code == 200 and "no-store" in made["Cache-Control"]
    token = re.search(rb'id="new-key">(shp_[^<]+)<', made.content).group(1).decode()
    key = APIKey.objects.get(tenant=acme)
    assert key.kind == "shop" and key.scopes == ["domains:read"] and key.token_sha256 == token_sha256(token)
    assert token.encode() not in client.get("/account/api-keys/").content
    refused = client.post("/account/api-keys/", {"name": "x", "scopes": ["tenants:write"]})
    assert b"Unknown scope" in refused.content and APIKey.objects.count() == 1
    # Another shop's key id is a 404 here; its own is revoked.
    other = APIKey.objects.create(kind="shop", name="g", prefix="shp_other", token_sha256="0" * 64,
                                  scopes=["domains:read"], tenant=globex, created_by="t")
    assert client.post(f"/account/api-keys/{other.pk}/revoke/").status_code == 404
    assert client.post(f"/account/api-keys/{key.pk}/revoke/").status_code == 302
    key.refresh_from_db()
    other.refresh_from_db()
    assert key.revoked_at is not None and other.revoked_at is None
    event = AuditEvent.objects.get(action="api_key.created")
    assert event.actor_type == "tenant_user" and event.tenant_id == acme.pk
    # Not the owner: no page.
    assert Client(HTTP_HOST="acme.platform.test").get("/account/api-keys/").status_code == 302
    assert Client(HTTP_HOST=ADMIN_HOST).get("/account/api-keys/").status_code == 404
