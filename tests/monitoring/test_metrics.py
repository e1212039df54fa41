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


@pytest.mark.django_db
def test_probe_gauges_are_written_by_postgresql_with_escaped_labels(client, plans):
    from datetime import timedelta

    from django.utils import timezone

    from tenants.models import Tenant
    from tests.monitoring.probe_data import record

    now = timezone.now()
    # Rows written directly: hosts here are never validated, so the escaping is what is tested.
    shop = Tenant.objects.create(subdomain="alpha", schema_name="alpha", name="A", plan=plans["growth"],
                                 owner_email="o@a.test", status="active")
    weird = 'we"ird\\host\nname'
    record(shop, weird, ok=True, at=now, latency_ms=12.5, tls_expires_at=now + timedelta(days=3))
    record(shop, "down.example", ok=False, at=now, latency_ms=None)
    record(shop, "stale.example", ok=True, at=now - timedelta(days=2))  # not probed for a day: left out
    families = scrape(client)
    up = {s.labels["host"]: s.value for s in families["platform_probe_up"].samples}
    assert up == {weird: 1.0, "down.example": 0.0}
    latency = {s.labels["host"]: s.value for s in families["platform_probe_latency_seconds"].samples}
    assert latency == {weird: 0.0125}
    days = families["platform_certificate_days_left"].samples
    assert [(s.labels["tenant"], round(s.value)) for s in days] == [("alpha", 3)]
    assert 2.99 < days[0].value <= 3.0


@pytest.mark.django_db
def test_platform_gauges_are_reused_within_the_cache_window(client, plans):
    from tenants.models import Tenant

    def tenants(families):
        return sum(s.value for s in families["platform_tenants"].samples)

    def requests_seen(families):
        return value(families, "platform_http_requests", tenant="_unrouted", status="404")

    def add_tenant(name):
        Tenant.objects.create(subdomain=name, schema_name=name, name=name, plan=plans["growth"],
                              owner_email=f"o@{name}.test", status="active")

    with override_settings(METRICS_CACHE_SECONDS=60):
        add_tenant("one")
        client.get("/", HTTP_HOST="nobody.localhost")
        first = scrape(client)
        add_tenant("two")
        client.get("/", HTTP_HOST="nobody.localhost")
        second = scrape(client)
        assert tenants(second) == tenants(first) == 1  # the platform part: from the cache
        assert requests_seen(second) == requests_seen(first) + 1  # request counters: never cached
        assert second["platform_metrics_source_seconds"].samples  # each source's cost is exported
    assert tenants(scrape(client)) == 2  # without the window: computed every scrape
