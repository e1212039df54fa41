import json
import re
from datetime import timedelta

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from core.facts import BackupFact, DeploymentFact, DrillFact, fact_sources_replaced
from monitoring.health import redis_client
from monitoring.metrics import job_record
from tests.conftest import BASE_DIR
from tests.monitoring import fact_sources
from tests.monitoring.probe_data import record


@pytest.mark.django_db(transaction=True)
def test_grafana_dashboard_only_queries_metrics_we_expose(client, make_tenant, live_worker):
    alpha = make_tenant("alpha")
    from django.utils import timezone

    record(alpha, "alpha.localhost", ok=True, at=timezone.now(), tls_expires_at=timezone.now())
    job_record(redis_client(), queue="default", outcome="succeeded", seconds=0.2)
    client.get("/", HTTP_HOST="alpha.localhost")
    fact_sources.FACTS.update(
        backups=[
            BackupFact(str(alpha.pk), fact_sources.hours_ago(2), timedelta(hours=1)),
            BackupFact("another-tenant", None, timedelta(hours=1)),
        ],
        drills=[DrillFact("alpha", fact_sources.hours_ago(1), True)],
        deployments=[DeploymentFact("1", "production", "succeeded", fact_sources.hours_ago(1))],
    )
    wired = {k: fact_sources.WIRED[k] for k in ("backups", "drills", "deployments")}
    try:
        with fact_sources_replaced(wired):
            scraped = client.get("/metrics", HTTP_HOST="localhost").content.decode()
    finally:
        for rows in fact_sources.FACTS.values():
            rows.clear()
    exposed = {s.name for f in text_string_to_metric_families(scraped) for s in f.samples}

    dashboard = json.loads((BASE_DIR / "compose" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bplatform_[a-z_]+", e)}
    assert used and used <= exposed, sorted(used - exposed)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_prometheus_scrape_config_points_at_our_endpoint():
    config = yaml.safe_load((BASE_DIR / "compose" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "platform-web")
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"


def test_observability_compose_sends_traces_to_jaeger_over_otlp_http():
    config = yaml.safe_load((BASE_DIR / "compose" / "docker-compose.observability.yml").read_text())
    services = config["services"]
    jaeger = services["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/all-in-one:")
    assert "4318:4318" in jaeger["ports"] and "16686:16686" in jaeger["ports"]
    for name in ("web", "worker", "scheduler"):  # the dev stack's processes, traced
        assert services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    # Prometheus reads the same token the control plane is given.
    token_file = BASE_DIR / "compose" / "prometheus-token.dev"
    assert token_file.read_text() == services["web"]["environment"]["METRICS_TOKEN"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]
