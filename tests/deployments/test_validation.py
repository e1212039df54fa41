"""Bad input is refused before anything is touched, with a message that says what to fix."""

import subprocess

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from core.audit import Actor
from core.models import AuditEvent
from deployments.errors import DeploymentValidationError
from deployments.models import Deployment, Environment, Release, Target
from deployments.secrets import environment_secret_set
from deployments.services import (
    deployment_create,
    release_create,
    rollback_create,
    target_problems,
    target_render_compose,
)
from deployments.stack import default_stack, stack_problems

ACTOR = Actor.command("pytest")
IMAGES = {"backend": "registry.example.com:5000/shop/api:1.0.0", "frontend": "shop/web@sha256:" + "a" * 64}


@pytest.fixture
def production(db):
    env = Environment.objects.create(name="production")
    for name in ("APP_DATABASE_URL", "DB_PASSWORD"):  # the default stack's secrets
        environment_secret_set(environment=env, name=name, value=f"{name.lower()}-value", actor=ACTOR)
    # No engine at this address: validation must refuse before trying to reach it.
    return Target.objects.create(
        environment=env, name="vps", docker_host="unix:///nonexistent/docker.sock", project="shop"
    )


@pytest.mark.parametrize(
    "version, message",
    [
        ("1.0", "not a semantic version"),
        ("01.2.3", "not a semantic version"),
        ("latest", "MAJOR.MINOR.PATCH"),
    ],
)
def test_malformed_version_is_refused(db, version, message):
    with pytest.raises(DeploymentValidationError, match=message):
        release_create(version=version, images=IMAGES, actor=ACTOR)
    assert not Release.objects.exists()


@pytest.mark.parametrize(
    "ref, message",
    [
        ("Shop/API:1.0", "not a valid image reference"),
        ("shop/api:", "not a valid image reference"),
        ("shop/api@sha256:abc", "not a valid image reference"),
        ("shop/api", "neither a tag nor a digest"),
    ],
)
def test_unparseable_image_reference_is_refused(db, ref, message):
    with pytest.raises(DeploymentValidationError, match=message):
        release_create(version="1.0.0", images={"backend": ref}, actor=ACTOR)


def test_release_is_recorded_with_audit_and_versions_are_immutable(db):
    release = release_create(version="v1.2.3-rc.1", images=IMAGES, git_sha="ABCDEF1", actor=ACTOR)
    assert release.version == "1.2.3-rc.1" and release.git_sha == "abcdef1"
    assert AuditEvent.objects.filter(action="release.created").count() == 1
    with pytest.raises(DeploymentValidationError, match="already exists; releases are immutable"):
        release_create(version="1.2.3-rc.1", images=IMAGES, actor=ACTOR)
    with pytest.raises(DeploymentValidationError, match="not a git commit sha"):
        release_create(version="1.2.4", images=IMAGES, git_sha="main", actor=ACTOR)


def test_create_release_command(db):
    call_command(
        "create_release",
        "2.0.0",
        "--image",
        "backend=shop/api:2.0.0",
        "--image",
        "frontend=shop/web:2.0.0",
        "--breaking-migrations",
    )
    assert Release.objects.get(version="2.0.0").backward_compatible_migrations is False
    with pytest.raises(CommandError, match="must be SERVICE=REF"):
        call_command("create_release", "2.0.1", "--image", "shop/api:2.0.1")


def test_unknown_disabled_or_targetless_environment_is_refused(production):
    release_create(version="1.0.0", images=IMAGES, actor=ACTOR)
    with pytest.raises(
        DeploymentValidationError, match="No environment named 'prod'. Environments: production"
    ):
        deployment_create(environment="prod", version="1.0.0", actor=ACTOR)
    Environment.objects.create(name="staging")
    with pytest.raises(DeploymentValidationError, match="'staging' has no target"):
        deployment_create(environment="staging", version="1.0.0", actor=ACTOR)
    Target.objects.filter(pk=production.pk).update(is_enabled=False)
    with pytest.raises(DeploymentValidationError, match="Target 'vps' of 'production' is disabled"):
        deployment_create(environment="production", version="1.0.0", actor=ACTOR)
    Environment.objects.filter(name="production").update(is_enabled=False)
    with pytest.raises(CommandError, match="Environment 'production' is disabled"):
        call_command("deploy_release", "1.0.0", "--env", "production")
    assert not Deployment.objects.exists()


def test_release_missing_a_service_unknown_release_and_strategy_are_refused(production):
    release_create(version="1.0.0", images={"backend": "shop/api:1.0.0"}, actor=ACTOR)
    with pytest.raises(
        DeploymentValidationError, match="has no image for frontend, which the stack of 'vps' needs"
    ):
        deployment_create(environment="production", version="1.0.0", actor=ACTOR)
    with pytest.raises(DeploymentValidationError, match="No release 9.9.9. Latest releases: 1.0.0"):
        deployment_create(environment="production", version="9.9.9", actor=ACTOR)
    with pytest.raises(DeploymentValidationError, match="Unknown strategy 'canary'"):
        deployment_create(environment="production", version="1.0.0", strategy="canary", actor=ACTOR)
    assert not Deployment.objects.exists()


def test_rollback_to_a_release_that_never_succeeded_is_refused(production):
    release_create(version="1.0.0", images=IMAGES, actor=ACTOR)
    with pytest.raises(DeploymentValidationError, match="Nothing to roll back to on production"):
        rollback_create(environment="production", actor=ACTOR)
    with pytest.raises(DeploymentValidationError, match="1.0.0 never succeeded on production"):
        rollback_create(environment="production", to_version="1.0.0", actor=ACTOR)
    with pytest.raises(CommandError, match="never succeeded"):
        call_command("rollback", "--env", "production", "--to", "1.0.0")


def test_rollback_past_breaking_migrations_needs_confirmation(production):
    from django.utils import timezone

    old = release_create(version="1.0.0", images=IMAGES, actor=ACTOR)
    new = release_create(version="2.0.0", images=IMAGES, backward_compatible_migrations=False, actor=ACTOR)
    for release in (old, new):
        Deployment.objects.create(
            target=production, release=release, status="succeeded", finished_at=timezone.now()
        )
    Target.objects.filter(pk=production.pk).update(live_release=new)
    with pytest.raises(DeploymentValidationError, match="goes past 2.0.0, whose migrations are not backward"):
        rollback_create(environment="production", actor=ACTOR)
    # Confirmed, it passes validation and goes on to reach the engine (absent here).
    with pytest.raises(Exception, match="Cannot reach the Docker Engine"):
        rollback_create(environment="production", actor=ACTOR, confirm_migrations=True)


def test_stack_problems_name_what_to_fix():
    stack = default_stack()
    assert stack_problems(stack) == []
    stack["services"]["backend"]["port"] = 0
    stack["services"]["postgres"]["image"] = ""
    stack["services"]["redis"]["volumes"] = ["nowhere:/data"]
    stack["services"]["frontend"]["healthcheck"]["interval"] = "soon"
    stack["services"]["frontend"]["secrets"] = {"API_KEY": "hunter2 value"}
    stack["edge"]["routes"]["/db"] = "postgres"
    problems = " | ".join(stack_problems(stack))
    for text in (
        "backend.port must be the TCP port",
        "stateful service needs an 'image'",
        "mounts volume 'nowhere'; add it to stack.volumes",
        "'soon' is not a duration",
        "secrets values are secret names",
        "'/db' points at 'postgres', which is not an app service",
    ):
        assert text in problems


@pytest.mark.parametrize(
    ("migrate", "message"),
    [
        ({"service": "postgres", "command": ["x"]}, "migrate.service 'postgres' must name an app service"),
        ({"service": "nope", "command": ["x"]}, "stack.migrate.service 'nope' must name an app service"),
        ({"service": "backend", "command": "migrate"}, "stack.migrate.command must be a non-empty list"),
        ({"service": "backend", "command": []}, "stack.migrate.command must be a non-empty list"),
        (["backend"], "stack.migrate.service None must name an app service"),
    ],
)
def test_stack_migrate_must_name_an_app_service_and_a_command(migrate, message):
    stack = default_stack()
    stack["migrate"] = {"service": "backend", "command": ["python", "manage.py", "migrate_schemas"]}
    assert stack_problems(stack) == []
    stack["migrate"] = migrate
    assert any(message in problem for problem in stack_problems(stack)), stack_problems(stack)


def test_target_problems(production):
    production.docker_host = "docker.example.com"
    production.edge_listen = "80"
    assert target_problems(production) == [
        "docker_host must start with unix://, tcp:// or ssh://.",
        "edge_listen '80' must be host:port, e.g. 0.0.0.0:80.",
    ]


def test_rendered_compose_is_valid_and_carries_secrets_only_by_reference(production, tmp_path, monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", "do-not-render-me")
    release = release_create(version="1.0.0", images=IMAGES, actor=ACTOR)
    text = target_render_compose(target=production, release=release)
    doc = yaml.safe_load(text)
    assert set(doc["services"]) == {"backend", "frontend", "postgres", "redis", "edge"}
    assert doc["services"]["backend"]["image"] == IMAGES["backend"]
    assert doc["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "${DB_PASSWORD}"
    assert doc["services"]["backend"]["environment"]["DATABASE_URL"] == "${APP_DATABASE_URL}"
    assert doc["services"]["backend"]["deploy"] == {"replicas": 2}
    assert "do-not-render-me" not in text
    (tmp_path / "docker-compose.yml").write_text(text)
    (tmp_path / "nginx.conf").write_text("")
    checked = subprocess.run(
        ["docker-compose", "-f", str(tmp_path / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "APP_DATABASE_URL": "x", "DB_PASSWORD": "y"},
    )
    assert checked.returncode == 0, checked.stderr


def test_render_compose_command(production, capsys):
    call_command("render_compose", "--env", "production")
    out = capsys.readouterr().out
    assert "${BACKEND_IMAGE}" in out and yaml.safe_load(out)["services"]["edge"]["ports"] == ["80:80"]
    with pytest.raises(CommandError, match="No environment named 'nope'"):
        call_command("render_compose", "--env", "nope")


def test_reaper_fails_deployments_whose_lock_expired_and_leaves_live_ones(production):
    from datetime import timedelta

    from django.utils import timezone

    from deployments.jobs import deployments_reap_job

    release = release_create(version="1.0.0", images=IMAGES, actor=ACTOR)
    other_env = Environment.objects.create(name="staging")
    other = Target.objects.create(environment=other_env, name="vps-2", docker_host="unix:///x.sock")
    crashed = Deployment.objects.create(target=production, release=release, status="running")
    Target.objects.filter(pk=production.pk).update(
        lock_deployment=crashed, lock_expires_at=timezone.now() - timedelta(seconds=1)
    )
    alive = Deployment.objects.create(target=other, release=release, status="running")
    Target.objects.filter(pk=other.pk).update(
        lock_deployment=alive, lock_expires_at=timezone.now() + timedelta(seconds=60)
    )
    assert deployments_reap_job() == 1
    crashed.refresh_from_db()
    alive.refresh_from_db()
    assert crashed.status == "failed" and "before its lock expired" in crashed.error
    assert alive.status == "running"
    assert Target.objects.get(pk=production.pk).lock_deployment is None
    event = AuditEvent.objects.get(action="deployment.failed")
    assert event.actor == "deployments reaper" and event.details["deployment"] == crashed.pk
    assert deployments_reap_job() == 0
