"""Migration monitoring 0003: channel secrets saved under the old derived key are re-encrypted
with the platform's keys (core/crypto.py), and back on reverse."""

import base64

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import override_settings

from core import crypto
from monitoring.models import Channel
from monitoring.secrets import secret_decrypt

BEFORE = [("monitoring", "0002_builtin_rules")]
AFTER = [("monitoring", "0003_channel_secrets_platform_keys")]


def legacy(material: str) -> Fernet:
    """The derivation monitoring/secrets.py used before 0003 (written out again, independently)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"platform-monitoring", info=b"channel-secrets")
    return Fernet(base64.urlsafe_b64encode(hkdf.derive(material.encode())))


def migrate(targets) -> None:
    connection.set_schema_to_public()
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


@pytest.mark.django_db(transaction=True)
@override_settings(MONITORING_SECRETS_KEY="the-old-monitoring-key")
def test_stored_secrets_are_re_encrypted_with_the_platform_keys(capsys):
    migrate(BEFORE)
    try:
        old = legacy("the-old-monitoring-key")
        slack_url = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"
        rows = {
            "slack": old.encrypt(slack_url.encode()).decode(),
            # Saved under a key that changed since: nobody can read it, it stays as it was.
            "lost": legacy("a-key-long-gone").encrypt(b"routing-key-0123456789").decode(),
            "mail": "",
        }
        with connection.cursor() as cursor:
            for name, token in rows.items():
                cursor.execute(
                    "INSERT INTO monitoring_channel (name, kind, enabled, min_severity, target, "
                    "secret_encrypted, secret_hint, created_at, updated_at) "
                    "VALUES (%s, 'slack', true, 'warning', '', %s, '', now(), now())",
                    [name, token],
                )
        migrate(AFTER)
        channels = {c.name: c for c in Channel.objects.all()}
        assert secret_decrypt(channels["slack"].secret_encrypted) == slack_url
        assert crypto.secret_decrypt(channels["slack"].secret_encrypted) == slack_url.encode()
        assert channels["lost"].secret_encrypted == rows["lost"]
        assert channels["mail"].secret_encrypted == ""
        assert "left unreadable, enter them again: lost" in capsys.readouterr().out

        # Reversible: back under the old key, then forward again.
        migrate(BEFORE)
        with connection.cursor() as cursor:
            cursor.execute("SELECT secret_encrypted FROM monitoring_channel WHERE name = 'slack'")
            assert old.decrypt(cursor.fetchone()[0].encode()).decode() == slack_url
    finally:
        migrate(AFTER)
    assert secret_decrypt(Channel.objects.get(name="slack").secret_encrypted) == slack_url
