import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings


def _queues(url: str) -> dict:
    return {"default": {"URL": url}, "long": {"URL": url}}


@pytest.mark.parametrize("host", ["localhost", "nowhere.example", "10.0.0.7", "shop.localhost"])
def test_healthz_answers_on_every_host_without_dependencies(client, host):
    # No database marker: the liveness probe must not touch the database.
    response = client.get("/healthz", HTTP_HOST=host)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_each_check_and_fails_when_redis_stops(client, private_redis, stop_redis):
    with override_settings(RQ_QUEUES=_queues(private_redis.url), READYZ_MIN_WORKERS=0):
        ready = client.get("/readyz", HTTP_HOST="unknown.example")
        assert ready.status_code == 200, ready.content
        checks = ready.json()["checks"]
        assert set(checks) == {"database", "redis", "workers"}
        assert all(c["ok"] for c in checks.values())

        stop_redis(private_redis)
        down = client.get("/readyz/", HTTP_HOST="localhost")
        assert down.status_code == 503
        body = down.json()
        assert body["status"] == "fail"
        assert body["checks"]["database"]["ok"] is True
        assert body["checks"]["redis"]["ok"] is False
        assert "ConnectionError" in body["checks"]["redis"]["detail"]
        assert body["checks"]["workers"]["detail"] == "skipped: Redis is unreachable"

        with pytest.raises(CommandError, match="redis: ConnectionError"):
            call_command("check_health")

        # Strangers learn what failed, not where: details are for METRICS_ALLOWED_IPS or the token.
        far = client.get("/readyz", HTTP_HOST="localhost", REMOTE_ADDR="203.0.113.9")
        assert far.status_code == 503
        assert far.json()["checks"]["redis"] == {"ok": False, "detail": "failed"}
        assert "127.0.0.1" not in far.content.decode()


@pytest.mark.django_db(transaction=True)
def test_readyz_needs_a_live_worker_on_every_queue(client, live_worker):
    with override_settings(READYZ_MIN_WORKERS=2):
        short = client.get("/readyz", HTTP_HOST="localhost")
        assert short.status_code == 503
        assert "1 worker(s) alive, need 2" in short.json()["checks"]["workers"]["detail"]
    ok = client.get("/readyz", HTTP_HOST="localhost")
    assert ok.status_code == 200, ok.content
    assert ok.json()["checks"]["workers"]["detail"] == "1 worker(s) alive"
    call_command("check_health")  # exit 0: no CommandError


@pytest.mark.django_db
def test_check_health_names_the_missing_worker(capsys):
    with pytest.raises(CommandError, match="workers: 0 worker.*no worker listens on default, long"):
        call_command("check_health")
    with override_settings(READYZ_MIN_WORKERS=0):
        call_command("check_health", "--json")
    assert json.loads(capsys.readouterr().out)["redis"]["ok"] is True
