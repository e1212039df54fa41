"""Stack secrets come from the environment's encrypted store (or a configured worker-env prefix), never
from the control plane's own settings; the refusal comes at save, at deploy and in plan-only."""

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from core import crypto
from core.audit import Action, Actor
from core.models import AuditEvent
from deployments.errors import DeploymentValidationError
from deployments.models import Deployment, DeploymentLogLine, Environment, EnvironmentSecret, Target
from deployments.secrets import (
    environment_secret_delete,
    environment_secret_set,
    stack_secrets_resolve,
)
from deployments.services import deployment_create, deployment_run, release_create, target_problems
from tests.deployments.conftest import SECRET_VALUE
from tests.deployments.images import make_stack

ACTOR = Actor.command("pytest")
# What an operator could copy into a container they control on today's main.
CONTROL_PLANE = [
    "SECRET_KEY",
    "DATABASE_URL",
    "PLATFORM_ENCRYPTION_KEYS",
    "BACKUP_S3_SECRET_ACCESS_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "REDIS_URL",
]


@pytest.fixture
def production(db):
    env = Environment.objects.create(name="production")
    environment_secret_set(environment=env, name="TEST_APP_SECRET", value=SECRET_VALUE, actor=ACTOR)
    release_create(version="1.0.0", images={"web": "platform-test/app:1.0.0"}, actor=ACTOR)
    # No engine at this address: a refusal must come before the target is asked anything.
    return Target.objects.create(
        environment=env,
        name="vps",
        docker_host="unix:///nonexistent/docker.sock",
        project="shop",
        stack=make_stack(app_port=18080),
    )


def name_secret(target: Target, name: str) -> None:
    target.stack["services"]["web"]["secrets"] = {"APP_SECRET": name}
    target.save()


@pytest.mark.parametrize("name", CONTROL_PLANE)
def test_control_plane_settings_are_refused_at_deploy_and_in_plan_only(production, monkeypatch, name):
    monkeypatch.setenv(name, "control-plane-value")  # the worker has it, as it has all of these
    name_secret(production, name)
    with pytest.raises(DeploymentValidationError) as refused:
        deployment_create(environment="production", version="1.0.0", actor=ACTOR)
    assert f"names {name!r}, one of the control plane's own settings" in str(refused.value)
    assert f"e.g. APP_{name}" in str(refused.value) and "control-plane-value" not in str(refused.value)
    with pytest.raises(CommandError, match="one of the control plane's own settings"):
        call_command("deploy_release", "1.0.0", "--env", "production", "--plan-only")
    assert not Deployment.objects.exists()


def test_a_worker_variable_outside_the_store_is_refused_without_a_prefix(production, monkeypatch):
    monkeypatch.setenv("API_TOKEN", "from-the-worker")
    name_secret(production, "API_TOKEN")
    (problem,) = target_problems(production)
    assert problem == (
        "stack.services.web.secrets.APP_SECRET: secret 'API_TOKEN' is not in the secret store of "
        "'production'; add it there (Deployments > Environment secrets in the admin), then deploy again."
    )
    with pytest.raises(DeploymentValidationError, match="not in the secret store"):
        deployment_create(environment="production", version="1.0.0", actor=ACTOR)


def test_the_store_resolves_and_wins_over_the_worker_environment(production, monkeypatch):
    monkeypatch.setenv("TEST_APP_SECRET", "worker-value")
    assert target_problems(production) == []
    assert stack_secrets_resolve(environment=production.environment, stack=production.stack) == {
        "TEST_APP_SECRET": SECRET_VALUE
    }


def test_prefix_allows_only_prefixed_worker_variables(production, monkeypatch, settings):
    settings.DEPLOY_SECRET_ENV_PREFIX = "APP_SECRET_"
    monkeypatch.setenv("APP_SECRET_TOKEN", "from-the-worker")
    name_secret(production, "APP_SECRET_TOKEN")
    assert target_problems(production) == []
    assert stack_secrets_resolve(environment=production.environment, stack=production.stack) == {
        "APP_SECRET_TOKEN": "from-the-worker"
    }
    monkeypatch.setenv("API_TOKEN", "from-the-worker")
    name_secret(production, "API_TOKEN")
    assert "or name it APP_SECRET_API_TOKEN and set that in the worker's environment" in target_problems(
        production
    )[0]
    name_secret(production, "APP_SECRET_UNSET")
    assert "nor set in the deploying worker's environment" in target_problems(production)[0]
    # A prefix that matches the control plane's own settings still cannot reach them.
    settings.DEPLOY_SECRET_ENV_PREFIX = "BACKUP_S3_"
    monkeypatch.setenv("BACKUP_S3_SECRET_ACCESS_KEY", "storage-key")
    name_secret(production, "BACKUP_S3_SECRET_ACCESS_KEY")
    assert "one of the control plane's own settings" in target_problems(production)[0]
    settings.DEPLOY_SECRET_ENV_PREFIX = "app-"
    assert "DEPLOY_SECRET_ENV_PREFIX 'app-' must be upper-case" in target_problems(production)[0]


def test_store_values_are_encrypted_and_audited_by_name_only(db):
    env = Environment.objects.create(name="staging")
    secret = environment_secret_set(environment=env, name="DB_PASSWORD", value="first-value", actor=ACTOR)
    environment_secret_set(environment=env, name="DB_PASSWORD", value="second-value", actor=ACTOR)
    secret.refresh_from_db()
    assert "second-value" not in secret.value_encrypted
    assert crypto.secret_decrypt(secret.value_encrypted) == b"second-value"
    environment_secret_delete(secret=secret, actor=ACTOR)
    assert not EnvironmentSecret.objects.exists()
    events = list(AuditEvent.objects.filter(action__startswith="environment_secret.").order_by("pk"))
    assert [e.action for e in events] == [
        Action.ENVIRONMENT_SECRET_CREATED,
        Action.ENVIRONMENT_SECRET_REPLACED,
        Action.ENVIRONMENT_SECRET_DELETED,
    ]
    assert all(e.details == {"environment": "staging", "name": "DB_PASSWORD"} for e in events)
    for bad, message in (
        ("SECRET_KEY", "one of the control plane's own settings; give the app's secret another name"),
        ("db password", "must be letters, digits and '_'"),
    ):
        with pytest.raises(DeploymentValidationError, match=message):
            environment_secret_set(environment=env, name=bad, value="v", actor=ACTOR)
    with pytest.raises(DeploymentValidationError, match="value is empty"):
        environment_secret_set(environment=env, name="TOKEN", value="", actor=ACTOR)


@pytest.mark.slow  # the real Docker Engine
@pytest.mark.django_db(transaction=True)
def test_store_secret_reaches_the_container_and_no_log_plan_or_audit(compose_target, engine, monkeypatch):
    monkeypatch.delenv("TEST_APP_SECRET", raising=False)  # only the store has it
    release_create(version="1.0.0", images={"web": engine["images"]["v1"]}, actor=ACTOR)
    # Changed between plan and run: the engine checks again and touches nothing.
    planned = deployment_create(environment="production", version="1.0.0", actor=ACTOR)
    good_stack = compose_target.stack
    monkeypatch.setenv("SECRET_KEY", "control-plane-secret-key")
    bad_stack = json.loads(json.dumps(good_stack))
    bad_stack["services"]["web"]["secrets"] = {"APP_SECRET": "SECRET_KEY"}
    Target.objects.filter(pk=compose_target.pk).update(stack=bad_stack)
    failed = deployment_run(deployment=planned, actor=ACTOR)
    assert failed.status == Deployment.Status.FAILED and "control plane's own settings" in failed.error
    assert engine["client"].containers.list(all=True) == []

    Target.objects.filter(pk=compose_target.pk).update(stack=good_stack)
    deployment = deployment_run(
        deployment=deployment_create(environment="production", version="1.0.0", actor=ACTOR), actor=ACTOR
    )
    assert deployment.status == Deployment.Status.SUCCEEDED, deployment.error
    web = engine["client"].containers.get(f"{compose_target.project}-web-0-blue")
    assert f"APP_SECRET={SECRET_VALUE}" in web.attrs["Config"]["Env"]
    assert not any("control-plane-secret-key" in e for e in web.attrs["Config"]["Env"])
    assert not DeploymentLogLine.objects.filter(text__contains=SECRET_VALUE).exists()
    assert SECRET_VALUE not in json.dumps(list(Deployment.objects.values_list("plan", "error")))
    assert SECRET_VALUE not in json.dumps(list(AuditEvent.objects.values_list("details", flat=True)))


def test_set_secret_command_reads_the_value_from_stdin_only(production, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin-value\n"))
    call_command("set_secret", "API_TOKEN", "--env", "production")
    out = capsys.readouterr().out
    assert out.strip() == "Secret API_TOKEN set for production (stored encrypted; it is never shown)"
    assert stack_secrets_resolve(
        environment=production.environment, stack={"services": {"web": {"secrets": {"T": "API_TOKEN"}}}}
    ) == {"API_TOKEN": "from-stdin-value"}
    monkeypatch.setattr("sys.stdin", io.StringIO("v"))
    with pytest.raises(CommandError, match="'DATABASE_URL' is one of the control plane's own settings"):
        call_command("set_secret", "DATABASE_URL", "--env", "production")
    with pytest.raises(CommandError, match="No environment named 'prod'"):
        call_command("set_secret", "API_TOKEN", "--env", "prod")
    call_command("set_secret", "API_TOKEN", "--env", "production", "--delete")
    assert not EnvironmentSecret.objects.filter(name="API_TOKEN").exists()
    with pytest.raises(CommandError, match="production has no secret 'API_TOKEN'; nothing to delete"):
        call_command("set_secret", "API_TOKEN", "--env", "production", "--delete")
