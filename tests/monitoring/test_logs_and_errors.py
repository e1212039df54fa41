import io
import json
import logging
import subprocess
import sys

import pytest
from django.contrib.auth.models import User
from django.test import RequestFactory

from monitoring.context import ContextFilter, request_var, tenant_var
from monitoring.logs import JsonFormatter, TextFormatter
from tests.conftest import BASE_DIR, subprocess_env


@pytest.fixture
def captured():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


@pytest.mark.django_db(transaction=True)
def test_json_log_lines_carry_request_id_and_tenant_schema(client, make_tenant, captured):
    make_tenant("alpha-shop")
    response = client.get("/missing/", HTTP_HOST="alpha-shop.localhost", HTTP_X_REQUEST_ID="req-12345678")
    assert response.status_code == 404
    assert response["X-Request-ID"] == "req-12345678"
    line = json.loads(captured.getvalue().splitlines()[-1])
    assert line["message"] == "Not Found: /missing/"
    assert line["level"] == "WARNING"
    assert line["request_id"] == "req-12345678"
    assert line["tenant"] == "alpha_shop"

    # A request id that could forge log fields is replaced by a fresh one.
    response = client.get("/missing/", HTTP_HOST="alpha-shop.localhost", HTTP_X_REQUEST_ID='x" evil')
    assert len(response["X-Request-ID"]) == 32 and response["X-Request-ID"].isalnum()


@pytest.mark.django_db
def test_log_context_names_a_loaded_user_and_reads_as_text_in_development():
    request = RequestFactory().get("/")
    request.user = User(username="ops-anna")
    request_token, tenant_token = request_var.set(request), tenant_var.set("beta")
    try:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
        ContextFilter().filter(record)
    finally:
        request_var.reset(request_token)
        tenant_var.reset(tenant_token)
    assert (record.user, record.tenant) == ("ops-anna", "beta")
    assert json.loads(JsonFormatter().format(record))["user"] == "ops-anna"
    text = TextFormatter("%(levelname)s %(message)s").format(record)
    assert text == "INFO hello world [tenant=beta user=ops-anna]"


def test_bad_log_format_is_refused_with_what_to_set():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=BASE_DIR, capture_output=True, text=True, timeout=60,
        env={**subprocess_env(), "LOG_FORMAT": "xml"},
    )
    assert result.returncode != 0
    assert "LOG_FORMAT must be 'json' or 'text', not 'xml'" in result.stderr


def test_sentry_events_carry_release_and_tenant_tags(receiver):
    sentry = receiver()
    port = sentry.url.rsplit(":", 1)[1]
    code = (
        "import sentry_sdk\n"
        "from monitoring.context import tenant_var\n"
        "tenant_var.set('acme_shoes')\n"
        "sentry_sdk.capture_message('probe failed')\n"
        "sentry_sdk.flush(5)\n"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=BASE_DIR, capture_output=True, text=True,
        timeout=60, env={**subprocess_env(), "SENTRY_DSN": f"http://publickey@127.0.0.1:{port}/42",
                         "SENTRY_RELEASE": "control-plane@1.2.3"},
    )
    assert result.returncode == 0, result.stderr
    assert sentry.requests, "no event reached the loopback Sentry"
    assert sentry.requests[0]["path"] == "/api/42/envelope/"
    items = [json.loads(line) for line in sentry.requests[0]["body"].splitlines() if line.strip()]
    event = next(i for i in items if i.get("message") == "probe failed")
    assert event["release"] == "control-plane@1.2.3"
    assert event["tags"]["tenant"] == "acme_shoes"


def test_sentry_is_off_without_a_dsn():
    from monitoring import errors

    assert errors._enabled is False


@pytest.mark.django_db(transaction=True)  # django-rq enqueues on commit
def test_json_log_lines_inside_a_job_carry_its_id():
    import django_rq

    from tenants.worker import TenantSafeSimpleWorker

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("monitoring.jobtest")
    logger.addHandler(handler)
    try:
        job = django_rq.get_queue("default").enqueue("logging.Logger.warning", logger, "inside a job")
        django_rq.get_worker("default", worker_class=TenantSafeSimpleWorker).work(burst=True)
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert (line["message"], line["job_id"]) == ("inside a job", job.id)
