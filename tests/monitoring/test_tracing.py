"""OpenTelemetry tracing: real gunicorn and RQ worker processes export OTLP/HTTP to a loopback
receiver, whose protobuf bodies are decoded here (opentelemetry-proto)."""

import os
import signal
import subprocess
import sys
import time

import django_rq
import pytest
import requests
from django.conf import settings
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from platform_site import devservices
from tests.conftest import BASE_DIR, subprocess_env


def _value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def spans_received(receiver) -> list[dict]:
    spans = []
    for request in list(receiver.requests):
        assert request["path"] == "/v1/traces"
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert headers["content-type"] == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(request["body"])
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append({
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_id": span.parent_span_id.hex(),
                        "status": span.status.code,
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                        "resource": resource,
                    })
    return spans


def wait_for_spans(receiver, predicate, what: str) -> list[dict]:
    deadline = time.monotonic() + 30
    while True:
        spans = spans_received(receiver)
        if predicate(spans):
            return spans
        names = [s["name"] for s in spans]
        assert time.monotonic() < deadline, f"{what}: not received within 30 s; got {names}"
        time.sleep(0.2)


def tracing_env(receiver, **extra: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "control-plane-test",
        "OTEL_SERVICE_VERSION": "2024.06.1",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, not the default 5 s
        **extra,
    }


def server_spans(spans: list[dict]) -> list[dict]:
    return [s for s in spans if s["kind"] == Span.SPAN_KIND_SERVER]


def check_request_traces(address: str, receiver) -> None:
    shop = {"Host": "acme.localhost"}
    assert requests.get(f"http://{address}/", headers=shop, timeout=10).status_code == 200
    assert requests.get(f"http://{address}/nope/", headers=shop, timeout=10).status_code == 404
    assert requests.get(f"http://{address}/healthz", timeout=10).status_code == 200
    spans = wait_for_spans(receiver, lambda s: len(server_spans(s)) >= 2, "two request spans")

    by_status = {s["attributes"]["http.response.status_code"]: s for s in server_spans(spans)}
    ok, missing = by_status[200], by_status[404]
    assert (ok["name"], ok["attributes"]["http.route"], ok["attributes"]["url.path"]) == ("GET /", "/", "/")
    assert ok["attributes"]["tenant.schema"] == "acme"
    assert len(ok["attributes"]["request.id"]) == 32
    assert (missing["name"], missing["attributes"]["url.path"]) == ("GET", "/nope/")
    assert "http.route" not in missing["attributes"]
    assert missing["attributes"]["tenant.schema"] == "acme"
    assert ok["resource"]["service.name"] == "control-plane-test"
    assert ok["resource"]["service.version"] == "2024.06.1"
    # /healthz is never traced.
    assert not [s for s in spans if s["attributes"].get("url.path") == "/healthz"]
    # The view's query is a child of the request, in the shop's schema, without parameter values.
    queries = [s for s in spans if s["trace_id"] == ok["trace_id"] and s["name"] == "SELECT"]
    assert any('"storefront_product"' in q["attributes"]["db.query.text"] for q in queries)
    assert all(q["attributes"]["tenant.schema"] == "acme" for q in queries if "storefront" in
               q["attributes"]["db.query.text"])
    assert all(q["kind"] == Span.SPAN_KIND_CLIENT and q["parent_id"] for q in queries)


@pytest.mark.django_db(transaction=True)
def test_gunicorn_requests_arrive_as_spans_with_route_status_and_tenant(gunicorn, make_tenant, receiver):
    make_tenant("acme")
    collector = receiver()
    check_request_traces(gunicorn(workers=2, **tracing_env(collector)), collector)


@pytest.mark.django_db(transaction=True)
def test_gunicorn_preload_workers_export_after_the_fork(make_tenant, receiver):
    # --preload sets tracing up in the master: the workers inherit it through fork().
    make_tenant("acme")
    collector = receiver()
    port = devservices.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "platform_site.wsgi", "--preload", "-w", "2",
         "-c", "python:monitoring.gunicorn_config", "-b", f"127.0.0.1:{port}", "--log-level", "warning"],
        cwd=BASE_DIR, env=subprocess_env(**tracing_env(collector)),
    )
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        devservices.wait_for(lambda: requests.get(url, timeout=1).ok, "gunicorn")
        check_request_traces(f"127.0.0.1:{port}", collector)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


@pytest.mark.django_db(transaction=True)
def test_rq_jobs_are_spans_with_queue_job_id_and_tenant(make_tenant, receiver):
    make_tenant("acme")
    collector = receiver()
    queue = django_rq.get_queue("default")
    queue.empty()  # the provisioning's schema-pool refill: not this test's business
    good = queue.enqueue("tests.monitoring.jobs.count_products", "acme")
    bad = queue.enqueue("tests.monitoring.jobs.count_products", "no_such_schema")
    # The real forking worker: each job runs in a work horse that leaves through os._exit().
    result = subprocess.run(
        [sys.executable, "manage.py", "rqworker", "default", "--burst"],
        cwd=BASE_DIR, env=subprocess_env(**tracing_env(collector)), capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    spans = wait_for_spans(
        receiver=collector, what="both job spans",
        predicate=lambda s: {good.id, bad.id} <= {x["attributes"].get("messaging.message.id") for x in s},
    )
    jobs = {s["attributes"]["messaging.message.id"]: s for s in spans if s["kind"] == Span.SPAN_KIND_CONSUMER}
    done, failed = jobs[good.id], jobs[bad.id]
    assert done["name"] == "rq.job tests.monitoring.jobs.count_products"
    assert done["attributes"]["messaging.system"] == "rq"
    assert done["attributes"]["messaging.destination.name"] == "default"
    assert done["attributes"]["tenant.schema"] == "acme"
    assert done["status"] != Status.STATUS_CODE_ERROR
    assert failed["status"] == Status.STATUS_CODE_ERROR
    assert f"trace_id={failed['trace_id']}" in result.stderr  # the failure's log line names its trace
    query = next(s for s in spans if s["parent_id"] == done["span_id"] and s["name"] == "SELECT")
    assert query["attributes"]["tenant.schema"] == "acme"
    assert '"storefront_product"' in query["attributes"]["db.query.text"]
    # Every span belongs to a job's trace: the worker's own Redis polling never starts one.
    job_traces = {s["trace_id"] for s in spans if s["kind"] == Span.SPAN_KIND_CONSUMER}
    assert {s["trace_id"] for s in spans} == job_traces == {done["trace_id"], failed["trace_id"]}


def test_tracing_is_off_without_an_endpoint():
    from monitoring import tracing

    assert tracing.enabled() is False
    assert not [m for m in settings.MIDDLEWARE if "opentelemetry" in m]
    # A fresh process: no tracer provider, no instrumentation, no middleware. (redis-py imports
    # parts of the SDK by itself when installed, so the SDK being importable says nothing.)
    code = (
        "import sys\n"
        "from django.conf import settings\n"
        "from opentelemetry import trace\n"
        "from monitoring import tracing\n"
        "print(tracing.enabled(), type(trace.get_tracer_provider()).__name__,\n"
        "      [m for m in sys.modules if m == 'monitoring.otel' or 'opentelemetry.instrumentation' in m],\n"
        "      [m for m in settings.MIDDLEWARE if 'opentelemetry' in m])\n"
    )
    env = {k: v for k, v in subprocess_env().items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=BASE_DIR, env=env, capture_output=True,
        text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False ProxyTracerProvider [] []"
    assert os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") is None
