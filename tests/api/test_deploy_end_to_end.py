"""A real deploy through the API, as CI does it: create releases, deploy them (run, not plan-only)
to a compose environment on the private Docker Engine, follow the steps until the deployment
succeeds, check the app answers through the edge, roll back through the API, and receive the
signed `deployment.succeeded` and `deployment.rolled_back` webhooks."""

import subprocess
import sys
import time

import pytest
from standardwebhooks import Webhook

from deployments.models import Target
from tests.conftest import BASE_DIR, subprocess_env
from tests.deployments.conftest import (  # noqa: F401 - the private Docker Engine and a compose target
    compose_target,
    docker_engine,
    edge_get,
    engine,
)

# Containers on the real Docker Engine, the real RQ workers and gunicorn.
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LOOPBACK = {"OUTBOUND_ALLOWED_NETWORKS": "127.0.0.1/32"}  # the webhook receiver is on loopback
FINAL = {"succeeded", "failed", "rolled_back"}


def follow(api, token: str, status_url: str, worker: subprocess.Popen) -> dict:
    """Poll the deployment as CI does, while the worker runs it; the steps seen on the way."""
    seen: list[list[str]] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        answer = api.get(status_url, token=token)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        names = [step["name"] for step in body["steps"]]
        if not seen or seen[-1] != names:
            seen.append(names)
        if body["status"] in FINAL:
            body["seen"] = seen
            return body
        if worker.poll() is not None and worker.returncode != 0:
            pytest.fail(f"the worker stopped: {worker.stderr.read()[-3000:] if worker.stderr else ''}")
        time.sleep(0.5)
    pytest.fail(f"the deployment did not finish in 180 s; last answer {body}")


def long_worker() -> subprocess.Popen:
    """The real RQ worker for deployments (the `long` queue), until its queue is empty."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "rqworker", "long", "--burst"],
        cwd=BASE_DIR, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def deploy_and_follow(api, token: str, body: dict, path: str = "/api/v1/deployments") -> dict:
    queued = api.post(path, body, token=token)
    assert queued.status_code == 202, queued.text
    assert queued.json()["status"] == "planned"
    worker = long_worker()
    try:
        done = follow(api, token, queued.json()["status_url"], worker)
        assert worker.wait(timeout=120) == 0, worker.stderr.read()[-3000:] if worker.stderr else ""
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert done["id"] == queued.json()["id"]
    return done


def test_ci_deploys_follows_and_rolls_back_through_the_api(
    api_server, staff_key, compose_target, engine, edge_get, receiver, webhook_worker  # noqa: F811
):
    api = api_server(**LOOPBACK)
    token = staff_key(["deployments:read", "deployments:write", "webhooks:read", "webhooks:write"]).token
    hook = api.post("/api/v1/webhooks", {"url": receiver.url("/ci"),
                                         "events": ["deployment.succeeded", "deployment.rolled_back"]},
                    token=token)
    assert hook.status_code == 201, hook.text
    secret = hook.json()["secret"]
    for version, image in (("1.0.0", "v1"), ("2.0.0", "v2")):
        made = api.post("/api/v1/releases", {"version": version, "images": {"web": engine["images"][image]},
                                             "git_sha": f"abcdef{version.replace('.', '')}"}, token=token)
        assert made.status_code == 201, made.text

    # Plan first (nothing touched), then run.
    plan = api.post("/api/v1/deployments",
                    {"environment": "production", "version": "1.0.0", "plan_only": True}, token=token)
    assert plan.status_code == 200, plan.text
    assert not engine["client"].containers.list(all=True, filters={"label": "platform.role=app"})
    first = deploy_and_follow(api, token, {"environment": "production", "version": "1.0.0"})
    assert first["status"] == "succeeded", first["error"]
    assert all(step["status"] == "succeeded" for step in first["steps"]), first["steps"]
    names = {step["name"] for step in first["steps"]}
    assert {"connect", "migrate", "health", "switch edge", "clean up"} <= names, names
    assert len(first["seen"]) > 1  # CI saw the steps appear while it polled
    assert edge_get(compose_target).text == "1.0.0"

    second = deploy_and_follow(api, token, {"environment": "production", "version": "2.0.0"})
    assert second["status"] == "succeeded", second["error"]
    assert (second["previous_version"], edge_get(compose_target).text) == ("1.0.0", "2.0.0")

    # Roll back through the API: the release before the live one, blue-green again.
    back = deploy_and_follow(api, token, {"environment": "production"}, path="/api/v1/rollbacks")
    assert back["status"] == "succeeded", back["error"]
    assert back["is_rollback"] is True and (back["version"], back["previous_version"]) == ("1.0.0", "2.0.0")
    assert {edge_get(compose_target).text for _ in range(5)} == {"1.0.0"}
    assert Target.objects.get(pk=compose_target.pk).live_release.version == "1.0.0"

    webhook_worker()
    got = sorted((Webhook(secret).verify(r.body, r.headers) for r in receiver.at("/ci")),
                 key=lambda body: body["timestamp"])  # one burst of deliveries: in any order
    assert [(g["type"], g["data"]["deployment"]["release"]) for g in got] == [
        ("deployment.succeeded", "1.0.0"), ("deployment.succeeded", "2.0.0"),
        ("deployment.rolled_back", "1.0.0")]
    assert got[-1]["data"]["deployment"]["is_rollback"] is True
    assert got[0]["data"]["deployment"]["id"] == first["id"]
