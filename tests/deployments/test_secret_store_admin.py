"""The secret store in the admin: write-only (set, replace, delete), operators only, audited by name;
and the target form refuses a stack that names the control plane's settings or an unsafe route."""

import json

import pytest
from django.forms.models import model_to_dict

from core import crypto
from core.audit import Action, Actor
from core.models import AuditEvent
from core.roles import OPERATORS, SUPPORT
from deployments.models import Environment, EnvironmentSecret, Target
from deployments.secrets import environment_secret_set
from deployments.stack import default_stack
from tests.staff import admin_client, admin_url, staff_user

VALUE = "hunter2-typed-into-the-admin"


@pytest.fixture
def env(db):
    return Environment.objects.create(name="production")


def test_operator_sets_replaces_and_deletes_a_secret_that_is_never_shown(env):
    ops = admin_client(staff_user("olivia", OPERATORS))
    added = ops.post(
        admin_url("admin:deployments_environmentsecret_add"),
        {"environment": env.pk, "name": "DB_PASSWORD", "value": VALUE},
    )
    assert added.status_code == 302, added.content[:2000]
    secret = EnvironmentSecret.objects.get(environment=env, name="DB_PASSWORD")
    assert crypto.secret_decrypt(secret.value_encrypted).decode() == VALUE
    change_url = admin_url("admin:deployments_environmentsecret_change", secret.pk)
    for url in (change_url, admin_url("admin:deployments_environmentsecret_changelist")):
        page = ops.get(url)
        assert page.status_code == 200 and b"DB_PASSWORD" in page.content
        assert VALUE.encode() not in page.content and secret.value_encrypted.encode() not in page.content

    # A refused form does not echo the value typed either.
    refused = ops.post(
        admin_url("admin:deployments_environmentsecret_add"),
        {"environment": env.pk, "name": "SECRET_KEY", "value": "another-typed-value"},
    )
    assert refused.status_code == 200 and b"one of the control plane&#x27;s own settings" in refused.content
    assert b"another-typed-value" not in refused.content
    assert not EnvironmentSecret.objects.filter(name="SECRET_KEY").exists()

    replaced = ops.post(change_url, {"value": "replaced-value"})
    assert replaced.status_code == 302
    secret.refresh_from_db()
    assert crypto.secret_decrypt(secret.value_encrypted) == b"replaced-value"
    deleted = ops.post(admin_url("admin:deployments_environmentsecret_delete", secret.pk), {"post": "yes"})
    assert deleted.status_code == 302 and not EnvironmentSecret.objects.exists()

    events = AuditEvent.objects.filter(action__startswith="environment_secret.").order_by("pk")
    assert [e.action for e in events] == [
        Action.ENVIRONMENT_SECRET_CREATED,
        Action.ENVIRONMENT_SECRET_REPLACED,
        Action.ENVIRONMENT_SECRET_DELETED,
    ]
    assert all(e.actor == "olivia" for e in events)
    written = json.dumps(list(AuditEvent.objects.values_list("details", "target")))
    assert VALUE not in written and "replaced-value" not in written


def test_support_and_group_less_staff_cannot_touch_the_store(env):
    secret = environment_secret_set(environment=env, name="DB_PASSWORD", value=VALUE, actor=Actor.system())
    for client in (
        admin_client(staff_user("sam", SUPPORT)),
        admin_client(staff_user("nobody")),
    ):
        add = client.post(
            admin_url("admin:deployments_environmentsecret_add"),
            {"environment": env.pk, "name": "TOKEN", "value": "x"},
        )
        change_url = admin_url("admin:deployments_environmentsecret_change", secret.pk)
        change = client.post(change_url, {"value": "y"})
        delete_url = admin_url("admin:deployments_environmentsecret_delete", secret.pk)
        delete = client.post(delete_url, {"post": "yes"})
        assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    secret.refresh_from_db()
    assert crypto.secret_decrypt(secret.value_encrypted).decode() == VALUE
    assert EnvironmentSecret.objects.count() == 1


def target_form_data(target: Target, stack: dict) -> dict:
    data = {}
    for key, value in model_to_dict(target).items():
        if value is None or key in ("id", "live_release", "live_color", "lock_deployment", "lock_expires_at"):
            continue
        if isinstance(value, bool):
            if value:
                data[key] = "on"
        elif isinstance(value, dict | list):
            data[key] = json.dumps(value)
        else:
            data[key] = value
    data["stack"] = json.dumps(stack)
    return data


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s: s["services"]["backend"].update(secrets={"DJANGO_KEY": "SECRET_KEY"}),
            b"names &#x27;SECRET_KEY&#x27;, one of the control plane&#x27;s own settings",
        ),
        (
            lambda s: s["edge"]["routes"].update({'/x; return 200 "pwned";': "backend"}),
            b"must start with &#x27;/&#x27; and use only letters",
        ),
    ],
)
def test_target_form_refuses_a_stack_that_may_never_deploy(env, change, message):
    target = Target.objects.create(environment=env, name="vps", docker_host="unix:///x.sock", project="shop")
    ops = admin_client(staff_user("olivia", OPERATORS))
    url = admin_url("admin:deployments_target_change", target.pk)
    stack = default_stack()
    change(stack)
    refused = ops.post(url, target_form_data(target, stack))
    assert refused.status_code == 200 and message in refused.content
    target.refresh_from_db()
    assert target.stack == default_stack()
    # The default stack only lacks its secrets in the store: it saves, with a warning.
    saved = ops.post(url, target_form_data(target, default_stack()), follow=True)
    assert b"cannot be deployed yet" in saved.content and b"not in the secret store" in saved.content
