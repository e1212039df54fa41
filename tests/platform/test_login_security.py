"""Login security: failed-login lockout per realm and client, staff TOTP two-factor, login audit.

Through the Django test client with real users (staff in public, owners in their shop's schema),
real axes and django-otp tables in PostgreSQL, and real TOTP codes.
"""

import json

import pytest
from axes.models import AccessAttempt
from cryptography.fernet import Fernet
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client, RequestFactory, override_settings
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from core.login import client_ip
from core.models import AuditEvent
from core.roles import OPERATORS, SUPPORT
from tenants.services import tenant_provision
from tests.conftest import TEST_ACTOR
from tests.staff import STAFF_PASSWORD, admin_client, staff_user

ATTACKER = "203.0.113.5"
OTHER = "198.51.100.20"
LIMIT = settings.LOGIN_FAILURE_LIMIT


def admin_login(client: Client, username: str, password: str, code: str = "", ip: str = ATTACKER):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password,
                                                      "otp_token": code}, REMOTE_ADDR=ip)


def host_client(host: str) -> Client:
    return Client(HTTP_HOST=host)


def code_for(device: TOTPDevice, steps_ahead: int = 0) -> str:
    # Each code verifies once (django-otp remembers the last time step); later logins use the next one.
    device.refresh_from_db()
    code = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=steps_ahead)
    return f"{code:06d}"


def actions(**filters) -> list[str]:
    return list(AuditEvent.objects.filter(**filters).order_by("id").values_list("action", flat=True))


# --- throttling on the admin host ------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_login_locks_out_after_the_limit_with_a_page_that_says_what_to_do():
    staff_user("alice", OPERATORS)
    client = host_client(settings.PLATFORM_ADMIN_HOST)
    for _ in range(LIMIT - 1):
        response = admin_login(client, "alice", "wrong-password")
        assert response.status_code == 200 and b"correct username and password" in response.content
    locked = admin_login(client, "alice", "wrong-password")
    assert locked.status_code == 429
    page = locked.content.decode()
    assert f"Wait {settings.LOGIN_LOCKOUT_MINUTES} minutes" in page
    assert "platform operator or superuser" in page
    assert locked["Retry-After"] == str(settings.LOGIN_LOCKOUT_MINUTES * 60)
    # Locked means locked: the right password is refused too, and nobody is logged in.
    again = admin_login(client, "alice", STAFF_PASSWORD)
    assert again.status_code == 429
    assert "_auth_user_id" not in client.session
    # One store, in the public schema, keyed by realm and username.
    attempt = AccessAttempt.objects.get()
    assert (attempt.username, attempt.ip_address) == ("public/alice", ATTACKER)
    assert attempt.failures_since_start == LIMIT + 1

    # Every failure (the refused one during the lockout too), and the lockout once.
    expected = ["staff.locked_out"] + ["staff.login_failed"] * (LIMIT + 1)
    assert sorted(actions(action__startswith="staff.")) == expected
    locked_event = AuditEvent.objects.get(action="staff.locked_out")
    assert locked_event.target == "alice" and locked_event.details["ip"] == ATTACKER
    assert locked_event.tenant is None
    # Nothing typed as a password reaches the trail.
    trail = json.dumps(list(AuditEvent.objects.values("actor", "target", "details")))
    assert "wrong-password" not in trail and STAFF_PASSWORD not in trail


@pytest.mark.django_db
def test_lockout_is_per_client_address_and_a_success_resets_the_count():
    staff_user("alice", SUPPORT)
    client = host_client(settings.PLATFORM_ADMIN_HOST)
    for _ in range(LIMIT):
        admin_login(client, "alice", "wrong-password", ip=ATTACKER)
    assert admin_login(client, "alice", STAFF_PASSWORD, ip=ATTACKER).status_code == 429
    # The owner of the account, elsewhere, still gets in.
    ok = admin_login(host_client(settings.PLATFORM_ADMIN_HOST), "alice", STAFF_PASSWORD, ip=OTHER)
    assert ok.status_code == 302 and ok["Location"] == "/admin/"
    assert AuditEvent.objects.filter(action="staff.logged_in", details__ip=OTHER).exists()
    # A few failures and then a success start the count again.
    third = host_client(settings.PLATFORM_ADMIN_HOST)
    for _ in range(LIMIT - 1):
        admin_login(third, "alice", "wrong-password", ip="192.0.2.9")
    assert admin_login(third, "alice", STAFF_PASSWORD, ip="192.0.2.9").status_code == 302
    assert not AccessAttempt.objects.filter(ip_address="192.0.2.9").exists()


@pytest.mark.django_db
def test_client_address_comes_from_x_forwarded_for_only_through_a_trusted_proxy():
    rf = RequestFactory()
    spoofed = rf.post("/", REMOTE_ADDR=ATTACKER, HTTP_X_FORWARDED_FOR="10.9.9.9")
    proxied = rf.post("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.9.9.9, 198.51.100.7")
    chain = rf.post("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7, 10.0.0.2")
    assert client_ip(spoofed) == ATTACKER
    with override_settings(TRUSTED_PROXIES=[]):
        assert client_ip(proxied) == "127.0.0.1"  # no trusted proxy: the header is never believed
    with override_settings(TRUSTED_PROXIES=["127.0.0.1/32", "10.0.0.0/8"]):
        assert client_ip(spoofed) == ATTACKER  # not from a proxy: header ignored
        # The right-most address a trusted proxy did not add; what the client wrote left of it is ignored.
        assert client_ip(proxied) == "198.51.100.7"
        assert client_ip(chain) == "198.51.100.7"
        # An unreadable chain is an unknown client (core.clientip), never the proxy itself.
        assert client_ip(rf.post("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="junk")) is None

        # Through the login: two clients behind the same edge are counted apart.
        staff_user("alice", SUPPORT)
        client = host_client(settings.PLATFORM_ADMIN_HOST)
        for _ in range(LIMIT):
            client.post("/admin/login/", {"username": "alice", "password": "nope"},
                        REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7")
        assert AccessAttempt.objects.get().ip_address == "198.51.100.7"
        other = host_client(settings.PLATFORM_ADMIN_HOST).post(
            "/admin/login/", {"username": "alice", "password": STAFF_PASSWORD},
            REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.8")
        assert other.status_code == 302


# --- throttling on shop hosts: one realm per shop ----------------------------------------------------


def owner_with_password(subdomain: str, email: str, password: str):
    tenant = tenant_provision(subdomain=subdomain, name=subdomain.title(), plan="growth",
                              owner_email=email, actor=TEST_ACTOR).tenant
    connection.set_tenant(tenant)
    try:
        owner = get_user_model().objects.get(username=email)
        owner.set_password(password)
        owner.save()
    finally:
        connection.set_schema_to_public()
    return tenant


@pytest.mark.django_db(transaction=True)
def test_a_lockout_on_one_shop_does_not_lock_the_same_name_on_another_shop_or_the_admin(plans):
    name, password = "same@owner.test", "a-long-unusual-passphrase"
    acme = owner_with_password("acme", name, password)
    owner_with_password("globex", name, password)
    get_user_model().objects.create_user(name, password=password, is_staff=True)

    def shop_login(host, pw):
        return Client(HTTP_HOST=host).post("/account/login/", {"username": name, "password": pw},
                                           REMOTE_ADDR=ATTACKER)

    for _ in range(LIMIT - 1):
        assert shop_login("acme.localhost", "guess").status_code == 200
    locked = shop_login("acme.localhost", "guess")
    assert locked.status_code == 429
    assert "Contact" in locked.content.decode() and "the platform's support" in locked.content.decode()
    assert shop_login("acme.localhost", password).status_code == 429
    # Same username, same address, other realms: untouched.
    assert shop_login("globex.localhost", password).status_code == 302
    staff = Client(HTTP_HOST=settings.PLATFORM_ADMIN_HOST)
    assert admin_login(staff, name, password).status_code == 302
    assert AccessAttempt.objects.get().username == f"acme/{name}"
    # The counters are in public only: no shop schema has axes (or device) tables of its own.
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s "
                       "AND (table_name LIKE 'axes%%' OR table_name LIKE 'otp%%')", [acme.schema_name])
        assert cursor.fetchone()[0] == 0

    # Owner events are the shop's, on the public audit table, written from a shop request.
    assert sorted(actions(tenant=acme, action__startswith="owner.")) == ["owner.locked_out"] + [
        "owner.login_failed"] * (LIMIT + 1)
    assert AuditEvent.objects.filter(action="owner.logged_in", tenant__subdomain="globex").count() == 1
    assert AuditEvent.objects.filter(action="staff.logged_in", target=name, tenant=None).count() == 1


@pytest.mark.django_db(transaction=True)
@override_settings(LOGIN_SUPPORT_CONTACT="help@platform.test")
def test_owner_logout_is_audited_and_lockout_names_support(plans):
    acme = owner_with_password("acme", "owner@acme.test", "a-long-unusual-passphrase")
    owner = Client(HTTP_HOST="acme.localhost")
    assert owner.post("/account/login/", {"username": "owner@acme.test",
                                          "password": "a-long-unusual-passphrase"}).status_code == 302
    assert owner.post("/account/logout/")["Location"] == "/account/login/"
    assert actions(tenant=acme, action__startswith="owner.") == ["owner.logged_in", "owner.logged_out"]
    event = AuditEvent.objects.get(action="owner.logged_in")
    assert event.actor_type == AuditEvent.ActorType.TENANT_USER and event.actor == "owner@acme.test"
    for _ in range(LIMIT):
        response = Client(HTTP_HOST="acme.localhost").post(
            "/account/login/", {"username": "owner@acme.test", "password": "x"})
    assert response.status_code == 429 and "help@platform.test" in response.content.decode()


# --- TOTP two-factor for staff ---------------------------------------------------------------------


def enroll(client: Client, user) -> TOTPDevice:
    page = client.get("/admin/2fa/setup/")
    assert page.status_code == 200
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    assert b"<svg" in page.content and page.context["secret"].encode() in page.content
    done = client.post("/admin/2fa/setup/", {"otp_token": code_for(device)})
    assert done.status_code == 302, done.content.decode()[:2000]
    device.refresh_from_db()
    assert device.confirmed
    return device


@pytest.mark.django_db
def test_staff_enrolls_then_the_admin_login_asks_for_a_real_code():
    alice = staff_user("alice", SUPPORT)
    client = admin_client(alice)

    page = client.get("/admin/2fa/setup/")
    first_secret = page.context["secret"]
    # A bad code is refused with a message that says what to do; nothing is confirmed.
    device = TOTPDevice.objects.get(user=alice, confirmed=False)
    wrong = f"{(int(code_for(device)) + 1) % 1_000_000:06d}"
    refused = client.post("/admin/2fa/setup/", {"otp_token": wrong})
    assert refused.status_code == 400
    assert "That code is wrong or has already been used" in refused.content.decode()
    not_digits = client.post("/admin/2fa/setup/", {"otp_token": "abc"})
    assert "digits only" in not_digits.content.decode()
    assert not TOTPDevice.objects.filter(user=alice, confirmed=True).exists()
    # The secret is shown once: a new visit makes a new one.
    assert client.get("/admin/2fa/setup/").context["secret"] != first_secret

    device = enroll(client, alice)
    assert client.get("/admin/").status_code == 200  # this session proved the code
    assert actions(action="staff.2fa_enrolled") == ["staff.2fa_enrolled"]
    status = client.get("/admin/2fa/setup/")
    assert b"Two-factor authentication is on" in status.content and b"Scan this code" not in status.content

    browser = host_client(settings.PLATFORM_ADMIN_HOST)
    missing = admin_login(browser, "alice", STAFF_PASSWORD)
    assert missing.status_code == 200
    assert "enter the 6-digit code from your authenticator app" in missing.content.decode()
    wrong = f"{(int(code_for(device, 1)) + 1) % 1_000_000:06d}"
    bad = admin_login(browser, "alice", STAFF_PASSWORD, code=wrong)
    assert bad.status_code == 200 and "That code is wrong" in bad.content.decode()
    # A wrong code is a failed login for the throttle and the trail; axes keeps neither secret.
    attempt = AccessAttempt.objects.get(username="public/alice")
    assert attempt.failures_since_start == 1
    assert wrong not in attempt.post_data and STAFF_PASSWORD not in attempt.post_data
    failed = AuditEvent.objects.get(action="staff.login_failed")
    assert failed.details["reason"] == "wrong two-factor code"
    device.refresh_from_db()
    device.throttle_reset()  # django-otp makes the next try wait a second after a wrong code

    ok = admin_login(browser, "alice", STAFF_PASSWORD, code=code_for(device, 1))
    assert ok.status_code == 302 and ok["Location"] == "/admin/"
    assert browser.get("/admin/").status_code == 200
    assert AuditEvent.objects.get(action="staff.logged_in").details["two_factor"] == "yes"
    # The same code cannot be replayed.
    replay = admin_login(host_client(settings.PLATFORM_ADMIN_HOST), "alice", STAFF_PASSWORD,
                         code=code_for(device, 1), ip=OTHER)
    assert replay.status_code == 200 and "already been used" in replay.content.decode()
    trail = json.dumps(list(AuditEvent.objects.values("actor", "target", "details")))
    assert code_for(device, 1) not in trail and device.key not in trail


@pytest.mark.django_db
def test_a_session_that_never_proved_the_code_is_signed_out():
    alice = staff_user("alice", SUPPORT)
    enroll(admin_client(alice), alice)
    stale = admin_client(alice)  # logged in without a code (like a session from before enrolling)
    response = stale.get("/admin/tenants/tenant/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=%2Fadmin%2Ftenants%2Ftenant%2F"
    assert "_auth_user_id" not in stale.session


@pytest.mark.django_db
def test_require_2fa_sends_operators_and_superusers_to_enroll_but_not_support():
    operator = staff_user("olivia", OPERATORS)
    root = staff_user("root", superuser=True)
    support = staff_user("sam", SUPPORT)
    # Off (the default): force_login'd staff without a device use the admin as before.
    for user in (operator, root, support):
        assert admin_client(user).get("/admin/").status_code == 200

    with override_settings(STAFF_REQUIRE_2FA=True):
        for user in (operator, root):
            client = admin_client(user)
            for path in ("/admin/", "/admin/tenants/tenant/", "/django-rq/"):
                response = client.get(path)
                assert (response.status_code, response["Location"]) == (302, "/admin/2fa/setup/"), path
            page = client.get("/admin/2fa/setup/")
            assert b"Your role requires two-factor authentication" in page.content
        assert admin_client(support).get("/admin/").status_code == 200

        client = admin_client(operator)
        enroll(client, operator)
        assert client.get("/admin/").status_code == 200
        assert client.get("/admin/tenants/tenant/").status_code == 200


@pytest.mark.django_db
def test_require_2fa_follows_what_a_user_may_do_not_the_group_name():
    """A hand-made role (permissions granted one by one, no group) is asked like an operator."""
    from django.contrib.auth.models import Permission

    handmade = staff_user("hank")
    looker = staff_user("luke")
    looker.user_permissions.add(Permission.objects.get(codename="view_tenant"))
    with override_settings(STAFF_REQUIRE_2FA=True):
        assert admin_client(handmade).get("/admin/").status_code == 200  # may do nothing yet
        assert admin_client(looker).get("/admin/").status_code == 200  # may only look
        handmade.user_permissions.add(Permission.objects.get(codename="suspend_tenant"))
        response = admin_client(handmade).get("/admin/")
        assert (response.status_code, response["Location"]) == (302, "/admin/2fa/setup/")


@pytest.mark.django_db
def test_setup_page_needs_a_staff_login_and_a_superuser_can_reset_a_device():
    assert host_client(settings.PLATFORM_ADMIN_HOST).get("/admin/2fa/setup/").status_code == 302
    shopper = get_user_model().objects.create_user("shopper", password=STAFF_PASSWORD)
    not_staff = host_client(settings.PLATFORM_ADMIN_HOST)
    not_staff.force_login(shopper)
    assert not_staff.get("/admin/2fa/setup/")["Location"].startswith("/admin/login/")

    alice = staff_user("alice", OPERATORS)
    device = enroll(admin_client(alice), alice)
    root = admin_client(staff_user("root", superuser=True))
    listing = root.get("/admin/otp_totp/totpdevice/")
    assert listing.status_code == 200 and device.key.encode() not in listing.content
    assert admin_client(staff_user("olivia", OPERATORS)).get("/admin/otp_totp/totpdevice/").status_code == 403
    root.post(f"/admin/otp_totp/totpdevice/{device.pk}/delete/", {"post": "yes"})
    assert not TOTPDevice.objects.filter(pk=device.pk).exists()
    removed = AuditEvent.objects.get(action="staff.2fa_removed")
    assert (removed.actor, removed.target) == ("root", "alice")


@pytest.mark.django_db
def test_a_superuser_lifts_a_lockout_and_it_is_audited():
    staff_user("alice", SUPPORT)
    for _ in range(LIMIT):
        admin_login(host_client(settings.PLATFORM_ADMIN_HOST), "alice", "wrong-password")
    attempt = AccessAttempt.objects.get()
    root = admin_client(staff_user("root", superuser=True))
    listing = root.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and b"public/alice" in listing.content
    assert b"wrong-password" not in root.get(f"/admin/axes/accessattempt/{attempt.pk}/change/").content
    support = admin_client(staff_user("sam", SUPPORT))
    assert support.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"}).status_code == 403
    root.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    cleared = AuditEvent.objects.get(action="login_lockout.cleared")
    assert (cleared.actor, cleared.target, cleared.details["ip"]) == ("root", "public/alice", ATTACKER)
    assert admin_login(host_client(settings.PLATFORM_ADMIN_HOST), "alice", STAFF_PASSWORD).status_code == 302


@pytest.mark.django_db
def test_totp_secrets_are_encrypted_at_rest_and_survive_a_key_rotation():
    alice = staff_user("alice", SUPPORT)
    device = enroll(admin_client(alice), alice)
    plain = device.key

    def stored() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT key FROM otp_totp_totpdevice WHERE id = %s", [device.pk])
            return cursor.fetchone()[0]

    at_rest = stored()
    assert at_rest.startswith("g1:") and plain not in at_rest and len(at_rest) <= 80
    old_keys = list(settings.PLATFORM_ENCRYPTION_KEYS)
    new_key = Fernet.generate_key().decode()
    # A new key first, the old one still listed: the device still works, and is re-sealed under the new key.
    with override_settings(PLATFORM_ENCRYPTION_KEYS=[new_key, *old_keys]):
        ok = admin_login(host_client(settings.PLATFORM_ADMIN_HOST), "alice", STAFF_PASSWORD,
                         code=code_for(device, 1))
        assert ok.status_code == 302
    assert stored() != at_rest
    # The old key removed too early: a clear message, not a crash and not a bypass.
    with override_settings(PLATFORM_ENCRYPTION_KEYS=old_keys):
        refused = admin_login(host_client(settings.PLATFORM_ADMIN_HOST), "alice", STAFF_PASSWORD,
                              code="123456")
        assert refused.status_code == 200
        assert "can no longer be read" in refused.content.decode()
    with override_settings(PLATFORM_ENCRYPTION_KEYS=[new_key]):
        assert TOTPDevice.objects.get(pk=device.pk).key == plain


@pytest.mark.django_db
def test_every_console_page_links_to_two_factor_set_up_and_names_the_login_apps_plainly():
    html = admin_client(staff_user("plain")).get("/admin/").content.decode()
    assert 'href="/admin/2fa/setup/">Two-factor sign-in</a>' in html
    root = admin_client(staff_user("root2", superuser=True)).get("/admin/").content.decode()
    assert "Login lockouts" in root and "Two-factor devices" in root
    assert "Job queues" in root
    assert "Axes" not in root and "Otp_Totp" not in root and "Django_Rq" not in root
