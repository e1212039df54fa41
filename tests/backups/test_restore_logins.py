"""After a restore (in place or as a new shop) nobody is logged in and no set-password link works.

Passwords come back as backed up, so people log in again as before; sessions and links made
before the restore (a link issued to someone who has since left, a stolen cookie) do not.
"""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.contrib.sessions.backends.db import SessionStore

from backups import pgtools
from backups.services.restore import backup_restore_as_new, backup_restore_in_place
from backups.services.runs import backup_tenant_now
from core.audit import Actor
from core.db import connection
from core.models import AuditEvent
from tenants.models import Tenant
from tests.backups.conftest import add_products

ACTOR = Actor.command("pytest")
PASSWORD = "correct horse battery staple"
pytestmark = pytest.mark.django_db(transaction=True)


class InShop:
    """The ORM inside one shop's schema, back to public afterwards."""

    def __init__(self, tenant: Tenant):
        self.tenant = tenant

    def __enter__(self):
        connection.set_tenant(self.tenant)
        return get_user_model()

    def __exit__(self, *exc):
        connection.set_schema_to_public()


def sessions(schema: str) -> int:
    with pgtools.connect() as conn:
        return conn.execute(f'SELECT count(*) FROM "{schema}".django_session').fetchone()[0]


@pytest.fixture
def shop_with_logins(make_tenant):
    """acme: the owner with a password and a second user, both logged in, then backed up; and a
    set-password link for each made after the backup (the users unchanged since)."""
    shop = make_tenant("acme")
    add_products(shop.schema_name, 10, "p-")
    with InShop(shop) as User:
        owner = User.objects.get(username=shop.owner_email)
        owner.set_password(PASSWORD)
        owner.save()
        User.objects.create_user("clerk@acme.test", "clerk@acme.test", PASSWORD)
        for user in User.objects.all():
            store = SessionStore()
            store["_auth_user_id"] = str(user.pk)
            store.create()
    assert sessions("acme") == 2
    backup = backup_tenant_now(tenant=shop, actor=ACTOR)
    with InShop(shop) as User:
        users = list(User.objects.all())
        links = {user.username: default_token_generator.make_token(user) for user in users}
        assert all(default_token_generator.check_token(user, links[user.username]) for user in users)
    return shop, backup, links


def assert_logins_reset(tenant: Tenant, links: dict[str, str]) -> None:
    assert sessions(tenant.schema_name) == 0
    with InShop(tenant) as User:
        for username, token in links.items():
            user = User.objects.get(username=username)
            assert not default_token_generator.check_token(user, token), username
            assert user.check_password(PASSWORD), username  # logins work as before
            # A link made now works: only the old ones are void.
            assert default_token_generator.check_token(user, default_token_generator.make_token(user))
    event = AuditEvent.objects.filter(action="backup.restored").latest("created_at")
    assert event.details["set_password_links_invalidated"] == len(links)
    assert "sessions_deleted" in event.details


def test_restore_in_place_logs_everyone_out_and_voids_set_password_links(shop_with_logins):
    shop, backup, links = shop_with_logins
    backup_restore_in_place(tenant=shop, backup_id=backup.pk, confirm="acme", actor=ACTOR)
    assert_logins_reset(shop, links)


def test_restore_as_new_copies_no_logins_and_no_set_password_links(shop_with_logins):
    shop, backup, links = shop_with_logins
    backup_restore_as_new(backup_id=backup.pk, subdomain="acme-copy", actor=ACTOR)
    assert_logins_reset(Tenant.objects.get(subdomain="acme-copy"), links)
    assert sessions("acme") == 2  # the source shop keeps its own
