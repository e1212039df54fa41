"""Deployments to a real Docker Engine: blue-green under load, automatic rollback, lock, reachability."""

import json
import socket
import subprocess
import time
from datetime import timedelta

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from core.audit import Actor
from core.db import connection
from core.models import AuditEvent
from deployments.errors import DeploymentValidationError, TargetLocked, TargetUnreachable
from deployments.jobs import deploy_job
from deployments.models import Deployment, DeploymentLogLine, Release, Target
from deployments.services import deployment_create, deployment_run, release_create
from tests.deployments.conftest import SECRET_VALUE
from tests.deployments.images import make_stack

ACTOR = Actor.command("pytest")
# Each test deploys containers on a real Docker Engine (started and given images once per session).
pytestmark = pytest.mark.slow


def make_release(version: str, engine) -> Release:
    key = {"1.0.0": "v1", "2.0.0": "v2", "3.0.0": "v3"}[version]
    return release_create(version=version, images={"web": engine["images"][key]}, actor=ACTOR)


def deploy(version: str, strategy: str = "blue-green") -> Deployment:
    deployment = deployment_create(environment="production", version=version, strategy=strategy, actor=ACTOR)
    return deployment_run(deployment=deployment, actor=ACTOR)


def app_containers(engine, target):
    return sorted(
        (c.name, c.status)
        for c in engine["client"].containers.list(
            all=True, filters={"label": [f"platform.project={target.project}", "platform.role=app"]}
        )
    )


@pytest.mark.django_db(transaction=True)
def test_blue_green_under_load_then_broken_release_rolls_back_then_rollback_command(
    compose_target, engine, request_loop, edge_get
):
    for v in ("1.0.0", "2.0.0", "3.0.0"):
        make_release(v, engine)
    first = deploy("1.0.0")
    assert first.status == Deployment.Status.SUCCEEDED, first.error
    assert edge_get(compose_target).text == "1.0.0"
    cache = engine["client"].containers.get(f"{compose_target.project}-cache")

    with request_loop(f"http://{compose_target.edge_listen}/version") as loop:
        second = deploy("2.0.0")
    assert second.status == Deployment.Status.SUCCEEDED, second.error
    assert loop.failures == [] and loop.ok > 20
    # Both answer for a moment while nginx's old worker finishes; then only the new one.
    assert loop.versions[0] == "1.0.0" and loop.versions[-1] == "2.0.0"
    assert {edge_get(compose_target).text for _ in range(20)} == {"2.0.0"}
    # The stateful service was left alone; only green runs now.
    assert engine["client"].containers.get(f"{compose_target.project}-cache").id == cache.id
    assert app_containers(engine, compose_target) == [(f"{compose_target.project}-web-0-green", "running")]

    with request_loop(f"http://{compose_target.edge_listen}/version") as loop:
        third = deploy("3.0.0")
    assert third.status == Deployment.Status.ROLLED_BACK
    assert "did not become healthy" in third.error and "Last health check output" in third.error
    assert loop.failures == [] and set(loop.versions) == {"2.0.0"}
    assert app_containers(engine, compose_target) == [(f"{compose_target.project}-web-0-green", "running")]
    target = Target.objects.get(pk=compose_target.pk)
    assert target.live_release.version == "2.0.0" and not target.is_locked

    call_command("rollback", "--env", "production", "--to", "1.0.0")
    assert edge_get(compose_target).text == "1.0.0"
    assert Target.objects.get(pk=compose_target.pk).live_release.version == "1.0.0"

    steps = list(second.steps.values_list("name", "status"))
    assert [n for n, _ in steps] == [
        "connect",
        "reconcile",
        "start green",
        "migrate",
        "health",
        "switch edge",
        "drain and stop blue",
        "clean up",
    ]
    assert all(s == "succeeded" for _, s in steps)
    # The release's own migrations ran in a one-off container of its image, on the direct connection.
    migrate_lines = list(
        DeploymentLogLine.objects.filter(step__deployment=second, step__name="migrate")
        .order_by("pk")
        .values_list("text", flat=True)
    )
    db = connection.settings_dict
    assert migrate_lines[1:] == [
        "applying the migrations of release 2.0.0",
        f"database: {db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "app secret seen: ***",
        "done",
        f"{compose_target.project}-migrate: exit code 0",
    ], migrate_lines
    assert migrate_lines[0].endswith(f"{engine['images']['v2']} $ /bin/migrate")
    assert not engine["client"].containers.list(all=True, filters={"label": "platform.role=migrate"})
    assert not DeploymentLogLine.objects.filter(text__contains=SECRET_VALUE).exists()
    # Action names are `<entity>.<what happened>` since core.audit (no "deployments." prefix).
    actions = list(AuditEvent.objects.values_list("action", flat=True))
    assert {"deployment.succeeded", "deployment.failed", "rollback.succeeded"} <= set(actions)


@pytest.mark.django_db(transaction=True)
def test_rolling_deploy_replaces_each_replica_behind_the_edge(compose_target, engine, request_loop, edge_get):
    compose_target.stack["services"]["web"]["replicas"] = 2
    compose_target.save()
    make_release("1.0.0", engine)
    make_release("2.0.0", engine)
    assert deploy("1.0.0", strategy="rolling").status == Deployment.Status.SUCCEEDED
    with request_loop(f"http://{compose_target.edge_listen}/version") as loop:
        second = deploy("2.0.0", strategy="rolling")
    assert second.status == Deployment.Status.SUCCEEDED, second.error
    assert loop.failures == [] and loop.versions[0] == "1.0.0" and loop.versions[-1] == "2.0.0"
    names = list(second.steps.values_list("name", flat=True))
    assert names[names.index("migrate") + 1 :][:2] == ["replace web replica 0", "replace web replica 1"]
    p = compose_target.project
    assert app_containers(engine, compose_target) == [
        (f"{p}-web-0-green", "running"),
        (f"{p}-web-1-green", "running"),
    ]


@pytest.mark.django_db(transaction=True)
def test_second_deployment_is_refused_while_one_holds_the_lock_and_an_expired_lock_frees_itself(
    compose_target, engine
):
    make_release("1.0.0", engine)
    make_release("2.0.0", engine)
    first = deployment_create(environment="production", version="1.0.0", actor=ACTOR)
    with pytest.raises(TargetLocked, match=rf"busy with deployment #{first.pk} of 1.0.0"):
        deployment_create(environment="production", version="2.0.0", actor=ACTOR)
    with pytest.raises(CommandError, match="busy with deployment"):
        call_command("deploy_release", "2.0.0", "--env", "production")
    assert Deployment.objects.count() == 1

    # The worker running #1 crashed mid-way: its lock stops being renewed and expires.
    Deployment.objects.filter(pk=first.pk).update(status=Deployment.Status.RUNNING)
    Target.objects.filter(pk=compose_target.pk).update(lock_expires_at=timezone.now() - timedelta(seconds=1))
    second = deploy("2.0.0")
    assert second.status == Deployment.Status.SUCCEEDED, second.error
    first.refresh_from_db()
    assert first.status == Deployment.Status.FAILED and "lock expired" in first.error


@pytest.mark.django_db(transaction=True)
def test_unreachable_docker_host_fails_fast_and_changes_nothing(compose_target, engine, settings, tmp_path):
    make_release("1.0.0", engine)
    make_release("2.0.0", engine)
    assert deploy("1.0.0").status == Deployment.Status.SUCCEEDED
    before = app_containers(engine, compose_target)
    settings.DEPLOY_DOCKER_TIMEOUT = 2
    for address in (f"unix://{tmp_path}/nothing.sock", "tcp://127.0.0.1:1"):
        Target.objects.filter(pk=compose_target.pk).update(docker_host=address)
        started = time.monotonic()
        with pytest.raises(TargetUnreachable, match=f"Cannot reach the Docker Engine at {address}"):
            deployment_create(environment="production", version="2.0.0", actor=ACTOR)
        assert time.monotonic() - started < 5
        with pytest.raises(CommandError, match="Cannot reach the Docker Engine"):
            call_command("deploy_release", "2.0.0", "--env", "production")
    assert Deployment.objects.count() == 1
    target = Target.objects.get(pk=compose_target.pk)
    assert target.live_release.version == "1.0.0" and not target.is_locked
    assert app_containers(engine, compose_target) == before


@pytest.mark.django_db(transaction=True)
def test_plan_only_shows_changes_and_touches_nothing(compose_target, engine, capsys):
    make_release("1.0.0", engine)
    make_release("2.0.0", engine)
    call_command("deploy_release", "1.0.0", "--env", "production", "--plan-only")
    plan = json.loads(capsys.readouterr().out)
    assert plan["apps"]["web"]["change"] == "create" and plan["stateful"] == {"cache": "create"}
    assert plan["volumes"] == {"cache_data": "create"} and plan["edge"] == "create"
    assert engine["client"].containers.list(all=True) == [] and Deployment.objects.count() == 0

    assert deploy("1.0.0").status == Deployment.Status.SUCCEEDED
    call_command("deploy_release", "2.0.0", "--env", "production", "--plan-only")
    plan = json.loads(capsys.readouterr().out)
    assert plan["apps"]["web"] == {
        "from": engine["images"]["v1"],
        "to": engine["images"]["v2"],
        "replicas": 1,
        "change": "replace",
    }
    assert plan["stateful"] == {"cache": "unchanged"} and plan["volumes"] == {"cache_data": "unchanged"}

    # A changed stateful configuration is planned, then applied, as a recreate.
    compose_target.stack["services"]["cache"]["environment"] = {"MAXMEMORY": "64mb"}
    compose_target.save()
    cache_id = engine["client"].containers.get(f"{compose_target.project}-cache").id
    call_command("deploy_release", "2.0.0", "--env", "production", "--plan-only")
    assert json.loads(capsys.readouterr().out)["stateful"] == {"cache": "recreate (configuration changed)"}
    assert deploy("2.0.0").status == Deployment.Status.SUCCEEDED
    cache = engine["client"].containers.get(f"{compose_target.project}-cache")
    assert cache.id != cache_id and "MAXMEMORY=64mb" in cache.attrs["Config"]["Env"]


@pytest.mark.django_db(transaction=True)
def test_deploy_job_runs_on_the_real_worker(compose_target, engine, run_worker, edge_get):
    make_release("1.0.0", engine)
    call_command("deploy_release", "1.0.0", "--env", "production", "--enqueue")
    deployment = Deployment.objects.get()
    assert deployment.status == Deployment.Status.PLANNED
    run_worker("long")
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.SUCCEEDED, deployment.error
    assert edge_get(compose_target).text == "1.0.0"
    # Idempotent: running the same job again changes nothing.
    assert deploy_job(deployment.pk, "command", "pytest") == Deployment.Status.SUCCEEDED
    assert AuditEvent.objects.filter(action="deployment.succeeded", actor__startswith="job ").count() == 1


@pytest.mark.django_db(transaction=True)
def test_failed_migration_phase_rolls_back_with_its_output_in_the_step_log(
    compose_target, engine, settings, edge_get
):
    make_release("1.0.0", engine)
    release_create(version="4.0.0", images={"web": engine["images"]["v4"]}, actor=ACTOR)
    assert deploy("1.0.0").status == Deployment.Status.SUCCEEDED

    # The release's own migration exits 3: gated, rolled back, its output in the step log.
    failed = deploy("4.0.0")
    assert failed.status == Deployment.Status.ROLLED_BACK
    assert f"Migrations failed in {engine['images']['v4']} (exit status 3)" in failed.error
    lines = DeploymentLogLine.objects.filter(step__deployment=failed, step__name="migrate")
    assert lines.filter(text="applying the migrations of release 4.0.0").exists()
    assert list(failed.steps.values_list("name", flat=True))[-2:] == ["migrate", "automatic rollback"]
    assert edge_get(compose_target).text == "1.0.0"
    assert app_containers(engine, compose_target) == [(f"{compose_target.project}-web-0-blue", "running")]

    # One that never ends is stopped at DEPLOY_MIGRATE_TIMEOUT_SECONDS and rolled back the same way.
    settings.DEPLOY_MIGRATE_TIMEOUT_SECONDS = 2
    stack = compose_target.stack
    stack["services"]["web"]["environment"] = {"MIGRATE_HANG": "1"}
    Target.objects.filter(pk=compose_target.pk).update(stack=stack)  # not save(): keep the live release
    release_create(version="4.0.1", images={"web": engine["images"]["v4"]}, actor=ACTOR)
    hung = deploy("4.0.1")
    assert hung.status == Deployment.Status.ROLLED_BACK
    assert "did not finish within 2 s and was stopped" in hung.error
    assert edge_get(compose_target).text == "1.0.0"
    assert not engine["client"].containers.list(all=True, filters={"label": "platform.role=migrate"})

    # A stack without "migrate" runs the control plane's own migrate_schemas, gated the same way.
    del stack["migrate"]
    stack["services"]["web"]["environment"] = {}
    Target.objects.filter(pk=compose_target.pk).update(stack=stack)
    settings.DEPLOY_MIGRATE_COMMAND = ["migrate_schemas", "--no-such-option"]
    make_release("2.0.0", engine)
    second = deploy("2.0.0")
    assert second.status == Deployment.Status.ROLLED_BACK
    assert "Migrations failed (exit status 2)" in second.error
    lines = DeploymentLogLine.objects.filter(step__deployment=second, step__name="migrate")
    assert lines.filter(text__contains="unrecognized arguments: --no-such-option").exists()
    assert lines.filter(text__contains="the stack names no migrate service").exists()
    assert edge_get(compose_target).text == "1.0.0"
    assert app_containers(engine, compose_target) == [(f"{compose_target.project}-web-0-blue", "running")]


@pytest.mark.django_db(transaction=True)
def test_failure_after_the_edge_switched_puts_the_old_replicas_back(
    compose_target, engine, request_loop, edge_get
):
    """Rolling, 2 replicas: replica 0 is replaced and switched, replica 1's port is taken, so it dies."""
    compose_target.stack["services"]["web"]["replicas"] = 2
    compose_target.save()
    make_release("1.0.0", engine)
    make_release("2.0.0", engine)
    assert deploy("1.0.0", strategy="rolling").status == Deployment.Status.SUCCEEDED
    port = compose_target.stack["services"]["web"]["port"] + 2 * 1 + 1  # web-1-green
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT, still exclusive
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with request_loop(f"http://{compose_target.edge_listen}/version") as loop:
            second = deploy("2.0.0", strategy="rolling")
    assert second.status == Deployment.Status.ROLLED_BACK, second.error
    assert "web-1-green keeps restarting" in second.error and "Address already in use" in second.error
    assert loop.failures == [] and loop.versions[-1] == "1.0.0"
    assert {edge_get(compose_target).text for _ in range(10)} == {"1.0.0"}
    p = compose_target.project
    assert app_containers(engine, compose_target) == [
        (f"{p}-web-0-blue", "running"),
        (f"{p}-web-1-blue", "running"),
    ]
    rollback_lines = DeploymentLogLine.objects.filter(
        step__deployment=second, step__name="automatic rollback"
    )
    assert rollback_lines.filter(text__contains="web-0-blue: restarted").exists()


@pytest.mark.django_db(transaction=True)
def test_missing_secret_is_refused_before_anything_starts(compose_target, engine, monkeypatch):
    make_release("1.0.0", engine)
    compose_target.environment.secrets.all().delete()
    # Set in the worker's environment is not enough: only the store (or a configured prefix) counts.
    monkeypatch.setenv("TEST_APP_SECRET", SECRET_VALUE)
    with pytest.raises(DeploymentValidationError, match="'TEST_APP_SECRET' is not in the secret store"):
        deployment_create(environment="production", version="1.0.0", actor=ACTOR)
    assert engine["client"].containers.list(all=True) == [] and not Deployment.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_compose_host_over_tcp_with_mutual_tls(compose_target, engine, edge_get, settings):
    make_release("1.0.0", engine)
    tls = engine["tls"]
    Target.objects.filter(pk=compose_target.pk).update(docker_host=engine["tcp"], docker_tls_ca=tls["ca"])
    settings.DEPLOY_DOCKER_TIMEOUT = 3
    # Without a client certificate the engine refuses the connection: a clear refusal, nothing started.
    with pytest.raises(TargetUnreachable, match=f"Docker Engine at {engine['tcp']}"):
        deployment_create(environment="production", version="1.0.0", actor=ACTOR)
    Target.objects.filter(pk=compose_target.pk).update(docker_tls_cert=tls["cert"], docker_tls_key=tls["key"])
    assert deploy("1.0.0").status == Deployment.Status.SUCCEEDED
    assert edge_get(compose_target).text == "1.0.0"


@pytest.mark.django_db(transaction=True)
def test_bridge_networks_published_edge_and_service_aliases(compose_target, engine, request_loop, edge_get):
    """The seed's shape: project networks, services found by name, only the edge's port published."""
    stack = make_stack(app_port=8080, network_mode="bridge")
    stack["networks"] = ["front", "back"]
    Target.objects.filter(pk=compose_target.pk).update(stack=stack)
    make_release("1.0.0", engine)
    make_release("2.0.0", engine)
    assert deploy("1.0.0").status == Deployment.Status.SUCCEEDED
    with request_loop(f"http://{compose_target.edge_listen}/version") as loop:
        second = deploy("2.0.0")
    assert second.status == Deployment.Status.SUCCEEDED, second.error
    assert loop.failures == [] and loop.versions[0] == "1.0.0" and loop.versions[-1] == "2.0.0"
    p, client = compose_target.project, engine["client"]
    for name, alias in ((f"{p}-web-0-green", "web"), (f"{p}-cache", "cache"), (f"{p}-edge", "edge")):
        networks = client.containers.get(name).attrs["NetworkSettings"]["Networks"]
        assert set(networks) == {f"{p}_front", f"{p}_back"}
        assert all(alias in (n.get("Aliases") or []) for n in networks.values())
    edge_ports = client.containers.get(f"{p}-edge").attrs["NetworkSettings"]["Ports"]
    host, port = compose_target.edge_listen.split(":")
    assert edge_ports == {f"{port}/tcp": [{"HostIp": host, "HostPort": port}]}
    assert client.containers.get(f"{p}-web-0-green").attrs["NetworkSettings"]["Ports"] == {}


@pytest.mark.django_db(transaction=True)
def test_rendered_compose_file_runs_with_docker_compose(compose_target, engine, tmp_path, capsys, edge_get):
    """The CLI path: the printed docker-compose.yml and nginx.conf, brought up by docker-compose itself."""
    stack = make_stack(app_port=8080, network_mode="bridge")
    Target.objects.filter(pk=compose_target.pk).update(stack=stack)
    make_release("1.0.0", engine)
    call_command("render_compose", "--env", "production", "--release", "1.0.0")
    (tmp_path / "docker-compose.yml").write_text(capsys.readouterr().out)
    call_command("render_compose", "--env", "production", "--edge-config")
    (tmp_path / "nginx.conf").write_text(capsys.readouterr().out)
    env = {"PATH": "/usr/bin:/bin", "DOCKER_HOST": engine["url"], "TEST_APP_SECRET": SECRET_VALUE}
    project = f"cli{compose_target.project}"
    up = subprocess.run(
        ["docker-compose", "-p", project, "up", "-d"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert up.returncode == 0, up.stderr
        deadline = time.monotonic() + 20
        while True:
            try:
                if edge_get(compose_target).text == "1.0.0":
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the compose stack's edge never answered"
            time.sleep(0.2)
        web = engine["client"].containers.get(f"{project}_web_1")
        assert f"APP_SECRET={SECRET_VALUE}" in web.attrs["Config"]["Env"]
    finally:
        subprocess.run(
            ["docker-compose", "-p", project, "down", "-v"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=120,
        )


@pytest.mark.django_db(transaction=True)
def test_compose_host_over_ssh(compose_target, engine, ssh_docker_host, edge_get, monkeypatch, settings):
    """ssh://user@host through a real sshd with the worker's ~/.ssh; a refused user fails fast."""
    monkeypatch.setenv("HOME", ssh_docker_host["home"])
    make_release("1.0.0", engine)
    make_release("2.0.0", engine)
    Target.objects.filter(pk=compose_target.pk).update(docker_host=ssh_docker_host["url"])
    first = deploy("1.0.0")
    assert first.status == Deployment.Status.SUCCEEDED, first.error
    assert edge_get(compose_target).text == "1.0.0"
    connect = first.steps.get(name="connect").lines.values_list("text", flat=True)
    assert any(f"at {ssh_docker_host['url']}" in line for line in connect)

    # The same host under a user the server does not know: refused before anything is created.
    settings.DEPLOY_DOCKER_TIMEOUT = 5
    host = ssh_docker_host["url"].rpartition("@")[2]
    Target.objects.filter(pk=compose_target.pk).update(docker_host=f"ssh://nobody-here@{host}")
    before = app_containers(engine, compose_target)
    with pytest.raises(TargetUnreachable, match="ssh"):
        deployment_create(environment="production", version="2.0.0", actor=ACTOR)
    assert app_containers(engine, compose_target) == before
    assert edge_get(compose_target).text == "1.0.0"
