"""OpenTelemetry tracing, only when an OTLP endpoint is configured (TRACING_OTLP_ENDPOINT, from
OTEL_EXPORTER_OTLP_ENDPOINT). Off by default: without an endpoint the SDK is never imported and
no request, query or job is touched. The SDK side lives in monitoring/otel.py.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext

logger = logging.getLogger(__name__)

_provider = None  # the process's TracerProvider once tracing_init() succeeded


def enabled() -> bool:
    return _provider is not None


def tracing_init(*, endpoint: str, service_name: str, release: str, environment: str,
                 sample_ratio: float = 1.0) -> bool:
    """Once per process (AppConfig.ready, so each gunicorn worker and RQ worker): the SDK, the
    exporter and the instrumentations. False, and nothing done, without an endpoint."""
    global _provider
    if not endpoint:
        return False
    if _provider is None:
        from monitoring import otel

        _provider = otel.setup(endpoint=endpoint, service_name=service_name, release=release,
                               environment=environment, sample_ratio=sample_ratio)
        logger.info("tracing to %s as %s", endpoint, service_name)
    return True


def job_span(*, job_id: str, func_name: str, queue: str, flush: bool) -> AbstractContextManager:
    """A span around one RQ job (a no-op when tracing is off); yields `finish(ok)`."""
    if _provider is None:
        return nullcontext(lambda ok: None)
    from monitoring import otel

    return otel.job_span(_provider, job_id=job_id, func_name=func_name, queue=queue, flush=flush)


def current_trace_id() -> str:
    """The sampled trace this code runs in (32 hex digits), for log lines; "" when not tracing."""
    if _provider is None:
        return ""
    from monitoring import otel

    return otel.current_trace_id()
