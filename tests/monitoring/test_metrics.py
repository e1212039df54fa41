import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from monitoring.metrics import tenant_labels


def scrape(client, **headers) -> dict:
    response = client.get("/metrics", HTTP_HOST="metrics.internal", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {f.name: f for f in text_string_to_metric_families(response.content.decode())}


def value(families: dict, name: str, sample: str | None = None, **labels) -> float:
    family = families[name]
    found = [
        s.value for s in family.samples
        if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert found, f"no {name} sample with {labels}"
    return sum(found)


@pytest.mark.django_db
def test_metrics_refuses_strangers_and_wrong_tokens(client):
    far = {"REMOTE_ADDR": "203.0.113.9"}
    refused = client.get("/metrics", HTTP_HOST="localhost", **far)
    assert refused.status_code == 403
    assert "METRICS_TOKEN" in refused.json()["error"]
    with override_settings(METRICS_TOKEN="s3cret-token"):
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong", **far).status_code == 403
        ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token", **far)
        assert ok.status_code == 200
    with override_settings(METRICS_ALLOWED_IPS=["203.0.113.0/24"]):
        assert client.get("/metrics", **far).status_code == 200
        assert client.get("/metrics").status_code == 403  # 127.0.0.1 no longer listed


@pytest.mark.django_db(transaction=True)
def test_metrics_count_requests_by_bounded_tenant_label_and_platform_state(client, make_tenant, run_worker):
    tenant_labels.reset()
    make_tenant("alpha")
    make_tenant("beta", plan="starter")
    before = scrape(client)
    with override_settings(METRICS_TENANT_LABEL_LIMIT=1):
        for _ in range(3):
            assert client.get("/", HTTP_HOST="alpha.localhost").status_code == 200
        assert client.get("/", HTTP_HOST="beta.localhost").status_code == 200
        assert client.get("/", HTTP_HOST="gamma.localhost").status_code == 404
    families = scrape(client)

    def delta(name, sample=None, **labels):
        base = value(before, name, sample, **labels) if any(
            all(s.labels.get(k) == v for k, v in labels.items()) and (sample is None or s.name == sample)
            for s in before[name].samples
        ) else 0
        return value(families, name, sample, **labels) - base

    assert delta("platform_http_requests", tenant="alpha", status="200") == 3
    assert delta("platform_http_requests", tenant="other", status="200") == 1  # beta: over the limit
    assert delta("platform_http_requests", tenant="_unrouted", status="404") == 1
    assert delta(
        "platform_http_request_duration_seconds", "platform_http_request_duration_seconds_count",
        tenant="alpha", status_class="2xx",
    ) == 3
    assert value(families, "platform_tenants", status="active", plan="growth") == 1
    assert value(families, "platform_tenants", status="active", plan="starter") == 1
    assert value(families, "platform_domains", status="active", kind="platform") == 2
    assert all(s.value == 1 for s in families["platform_metrics_source_up"].samples)

    import django_rq

    django_rq.get_queue("default").empty()  # provisioning queued pool refills: not this test's
    django_rq.get_queue("default").enqueue("tenants.jobs.usage_refresh_job")
    django_rq.get_queue("default").enqueue("monitoring.health.no_such_function")
    run_worker("default")
    jobs = scrape(client)
    count = "platform_rq_job_duration_seconds_count"
    assert value(jobs, "platform_rq_job_duration_seconds", count, queue="default", outcome="succeeded") == 1
    assert value(jobs, "platform_rq_job_duration_seconds", count, queue="default", outcome="failed") == 1
    assert value(jobs, "platform_rq_jobs", queue="default", state="failed") == 1


@pytest.mark.django_db(transaction=True)
def test_metrics_add_up_across_gunicorn_workers(gunicorn, tmp_path, plans):
    address = gunicorn(
        workers=2, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"),
        GUNICORN_CMD_ARGS="-c python:monitoring.gunicorn_config",
    )

    def get(_):
        request = urllib.request.Request(f"http://{address}/admin/login/", headers={"Host": "localhost"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status

    # Concurrent rounds until both sync workers have served some (the second may still be booting).
    folder, sent = tmp_path / "prom", 0
    with ThreadPoolExecutor(8) as pool:
        while len(list(folder.glob("counter_*.db"))) < 2 and sent < 800:
            assert set(pool.map(get, range(40))) == {200}
            sent += 40
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    assert value(families, "platform_http_requests", tenant="_platform", status="200") == sent
    assert len(list(folder.glob("counter_*.db"))) == 2  # both workers' counts are in that sum
