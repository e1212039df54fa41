import re

import pytest
from django.test import Client

from tenants.services import tenant_owner_link, tenant_provision
from tests.conftest import TEST_ACTOR

pytestmark = pytest.mark.django_db(transaction=True)


def path_of(link: str) -> str:
    return re.sub(r"^https?://[^/]+", "", link)


def test_owner_sets_a_password_once_then_logs_in(plans):
    link = tenant_provision(
        subdomain="acme", name="Acme", plan="growth", owner_email="owner@acme.test", actor=TEST_ACTOR
    ).owner_link
    browser = Client(HTTP_HOST="acme.localhost")
    form = browser.get(path_of(link), follow=True)
    assert b"Set your password" in form.content
    done = browser.post(form.redirect_chain[-1][0], {
        "new_password1": "a-long-unusual-passphrase", "new_password2": "a-long-unusual-passphrase",
    }, follow=True)
    assert b"Your password is set" in done.content
    # The link is single-use: the password change invalidates its token.
    again = Client(HTTP_HOST="acme.localhost").get(path_of(link), follow=True)
    assert b"expired or was already used" in again.content
    login = Client(HTTP_HOST="acme.localhost").post(
        "/account/login/", {"username": "owner@acme.test", "password": "a-long-unusual-passphrase"}
    )
    assert login.status_code == 302


def test_staff_can_issue_a_fresh_link_and_it_is_audited(make_tenant):
    tenant = make_tenant("acme")
    link = tenant_owner_link(tenant=tenant, actor=TEST_ACTOR)
    assert "/account/set-password/" in link
    assert tenant.audit_events.filter(action="tenant.owner_link_issued").exists()
    # A link for one shop does nothing on another shop's host.
    make_tenant("globex")
    other = Client(HTTP_HOST="globex.localhost").get(path_of(link), follow=True)
    assert b"expired or was already used" in other.content
