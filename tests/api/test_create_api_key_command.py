"""manage.py create_api_key: a staff key for CI or a new install, written once, audited."""

import stat

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from api.models import DEFAULT_SCOPES, APIKey
from api.services import apikey_authenticate
from core.models import AuditEvent


@pytest.mark.django_db
def test_writes_a_usable_key_to_a_private_file_and_keeps_it_on_a_rerun(tmp_path, capsys):
    token_file = tmp_path / "keys" / "ci-key"
    call_command("create_api_key", name="ci", scopes="deployments:read,deployments:write",
                 expires_days=30, token_file=str(token_file), keep_existing=True)
    token = token_file.read_text().strip()
    out = capsys.readouterr().out
    assert token not in out and "token in" in out  # never printed when written to a file
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    key = apikey_authenticate(token)
    assert key is not None and key.name == "ci" and key.scopes == ["deployments:read", "deployments:write"]
    assert key.expires_at is not None
    event = AuditEvent.objects.get(action="api_key.created")
    assert event.actor_type == "command" and event.actor.startswith("create_api_key")
    assert token not in str(event.details)

    call_command("create_api_key", name="ci", token_file=str(token_file), keep_existing=True)
    assert token_file.read_text().strip() == token and APIKey.objects.count() == 1

    key.revoked_at = key.created_at
    key.save(update_fields=["revoked_at"])
    call_command("create_api_key", name="ci", token_file=str(token_file), keep_existing=True)
    assert token_file.read_text().strip() != token and APIKey.objects.count() == 2


@pytest.mark.django_db
def test_prints_the_token_once_with_the_default_scopes(capsys):
    call_command("create_api_key", name="backend")
    token = capsys.readouterr().out.strip()
    key = apikey_authenticate(token)
    assert key is not None and key.scopes == DEFAULT_SCOPES and "backups:restore" not in key.scopes


@pytest.mark.django_db
@pytest.mark.parametrize("options, message", [
    ({"scopes": "tenants:read,tenants:delete"}, "Unknown scope(s) tenants:delete; choose from"),
    ({"scopes": ","}, "Choose at least one scope."),
    ({"expires_days": 0}, "--expires-days must be 1 or more"),
    ({"keep_existing": True}, "--keep-existing needs --token-file"),
    ({"name": "  "}, "Give the key a name"),
])
def test_bad_input_says_what_to_fix_and_makes_nothing(options, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call_command("create_api_key", **{"name": "x", **options})
    assert not APIKey.objects.exists() and not AuditEvent.objects.filter(action="api_key.created").exists()
