"""The OpenTelemetry SDK side of monitoring.tracing, imported only when tracing is on.

Traced: requests (opentelemetry-instrumentation-django, named by route), SQL statements (through
Django's execute_wrappers, see below), Redis commands and outgoing `requests` calls (their own
instrumentations), and RQ jobs (a span per job, monitoring.worker). Every span started while a
tenant is known (a shop's request, a job working in a tenant's schema) carries `tenant.schema`.
A trace starts at a request or a job only: client calls outside one (the worker polling Redis,
queries at start-up) are never sampled.

SQL: the project's backend sets its own schema-pinning cursor class on every connection, which
opentelemetry-instrumentation-psycopg's cursor factory would be replaced by (or would replace),
so statements are traced one layer up, with Django's placeholders and never the values.

Fork safety: gunicorn without --preload imports the app in each worker, which then sets up its
own provider; with --preload, and in RQ's forked work horses, the SDK restarts its export thread
in the child (os.register_at_fork). A work horse leaves through os._exit(), so job_span flushes
before it returns, waiting at most JOB_FLUSH_SECONDS.
"""

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.db.backends.signals import connection_created
from django_tenants.utils import get_public_schema_name
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode

from monitoring.context import current_tenant

TENANT_ATTRIBUTE = "tenant.schema"
# Machine endpoints are hit every few seconds by probes and scrapers: not worth a trace each.
# Matched against the absolute URL without its query ("http://host/healthz?").
EXCLUDED_URLS = r"^[a-z]+://[^/]+/(healthz|readyz|metrics)/?(\?|$)"
JOB_FLUSH_SECONDS = 2.0
SQL_TEXT_LIMIT = 2000

# The tenants a running job touched: filled as its child spans start, read when it ends.
_job_tenants: ContextVar[set[str] | None] = ContextVar("job_tenants", default=None)


def setup(*, endpoint: str, service_name: str, release: str, environment: str,
          sample_ratio: float) -> TracerProvider:
    # The stable HTTP semantic conventions (http.response.status_code, url.path, ...).
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    attributes = {"service.name": service_name, "deployment.environment.name": environment}
    if release:
        attributes["service.version"] = release
    provider = TracerProvider(
        resource=Resource.create(attributes), sampler=ParentBased(root=EntryPointSampler(sample_ratio))
    )
    provider.add_span_processor(TenantSpanProcessor())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    # Inserts its middleware first in settings.MIDDLEWARE: this runs in AppConfig.ready(), before
    # any handler has loaded the middleware chain.
    DjangoInstrumentor().instrument(
        tracer_provider=provider, response_hook=_response_hook, excluded_urls=EXCLUDED_URLS
    )
    RedisInstrumentor().instrument(tracer_provider=provider)
    RequestsInstrumentor().instrument(tracer_provider=provider)
    connection_created.connect(_trace_statements, dispatch_uid="monitoring.otel")
    return provider


class EntryPointSampler(Sampler):
    """Roots are requests and jobs, sampled at `ratio`; a client call never starts a trace."""

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None) -> SamplingResult:
        if kind in (SpanKind.CLIENT, SpanKind.PRODUCER):
            return SamplingResult(Decision.DROP)
        return self._ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"EntryPointSampler{{{self._ratio.rate}}}"


def _tenant_now() -> str:
    """The request's tenant, else the schema the database connection is set to (inside jobs)."""
    tenant = current_tenant()
    if tenant:
        return tenant
    from django.db import connection

    schema = getattr(connection, "schema_name", "") or ""
    return "" if schema == get_public_schema_name() else schema


class TenantSpanProcessor(SpanProcessor):
    def on_start(self, span, parent_context=None) -> None:
        tenant = _tenant_now()
        if tenant:
            span.set_attribute(TENANT_ATTRIBUTE, tenant)
            touched = _job_tenants.get()
            if touched is not None:
                touched.add(tenant)


def _response_hook(span, request, response) -> None:
    # Tenant routing runs after the tracing middleware opened the span and picks the URLconf
    # (shop or admin host), so the route and the tenant are only known now.
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    if route is not None:
        route = "/" + route
        span.set_attribute("http.route", route)
        span.update_name(f"{request.method} {route}")
    else:
        span.update_name(request.method)  # unmatched: no path in the name (unbounded)
    schema = getattr(getattr(request, "tenant", None), "schema_name", "")
    if schema and schema != get_public_schema_name():
        span.set_attribute(TENANT_ATTRIBUTE, schema)
    request_id = getattr(request, "request_id", "")
    if request_id:
        span.set_attribute("request.id", request_id)  # the X-Request-ID of the log lines


def _trace_statements(sender, connection, **kwargs) -> None:
    if _statement_span not in connection.execute_wrappers:
        connection.execute_wrappers.append(_statement_span)


def _statement_span(execute, sql, params, many, context):
    text = sql if isinstance(sql, str) else str(sql)
    words = text.split(None, 1)
    operation = words[0].upper() if words else "SQL"
    attributes = {
        "db.system.name": "postgresql",
        "db.namespace": context["connection"].settings_dict.get("NAME") or "",
        "db.operation.name": operation,
        "db.query.text": text[:SQL_TEXT_LIMIT],
    }
    tracer = trace.get_tracer("monitoring.db")
    with tracer.start_as_current_span(operation, kind=SpanKind.CLIENT, attributes=attributes):
        return execute(sql, params, many, context)


@contextmanager
def job_span(provider: TracerProvider, *, job_id: str, func_name: str, queue: str,
             flush: bool) -> Iterator[Callable[[bool], None]]:
    tracer = trace.get_tracer("monitoring.worker")
    touched: set[str] = set()
    token = _job_tenants.set(touched)
    attributes = {
        "messaging.system": "rq",
        "messaging.operation.type": "process",
        "messaging.destination.name": queue,
        "messaging.message.id": job_id,
        "code.function.name": func_name,
    }
    try:
        with tracer.start_as_current_span(
            f"rq.job {func_name}", kind=SpanKind.CONSUMER, attributes=attributes
        ) as span:

            def finish(ok: bool) -> None:
                if touched:
                    span.set_attribute(TENANT_ATTRIBUTE, ",".join(sorted(touched)))
                if not ok:
                    span.set_status(Status(StatusCode.ERROR, "job failed"))

            yield finish
    finally:
        _job_tenants.reset(token)
        if flush:
            # In a thread, so an unreachable collector cannot hold the job up past the bound.
            exporter = threading.Thread(target=provider.force_flush, daemon=True)
            exporter.start()
            exporter.join(JOB_FLUSH_SECONDS)


def current_trace_id() -> str:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid and context.trace_flags.sampled else ""
