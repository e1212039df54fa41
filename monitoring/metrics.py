"""Prometheus metrics: request counters and histograms (per process, or multi-process under
gunicorn via PROMETHEUS_MULTIPROC_DIR), plus platform gauges computed at scrape time.

Tenant labels are bounded: each process labels at most METRICS_TENANT_LABEL_LIMIT distinct
tenants (those listed in METRICS_TENANT_LABELS first), and counts every other one as "other".
"""

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

from django.conf import settings
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString

logger = logging.getLogger(__name__)

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
JOB_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
JOB_METRICS_KEY = "platform:metrics:jobs"

REQUESTS = Counter(
    "platform_http_requests", "HTTP requests served, by tenant and status code", ["tenant", "status"]
)
LATENCY = Histogram(
    "platform_http_request_duration_seconds",
    "Time to answer an HTTP request, by tenant and status class",
    ["tenant", "status_class"],
    buckets=REQUEST_BUCKETS,
)


class TenantLabels:
    """Admits up to `limit` distinct tenant labels per process; the rest become "other"."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def label(self, subdomain: str) -> str:
        if subdomain in self._seen:
            return subdomain
        pinned = settings.METRICS_TENANT_LABELS
        if subdomain in pinned:
            return subdomain
        with self._lock:
            if len(self._seen) + len(pinned) < settings.METRICS_TENANT_LABEL_LIMIT:
                self._seen.add(subdomain)
                return subdomain
        return "other"

    def reset(self) -> None:
        self._seen.clear()


tenant_labels = TenantLabels()


def request_observe(*, tenant: str, status: int, seconds: float) -> None:
    REQUESTS.labels(tenant, str(status)).inc()
    LATENCY.labels(tenant, f"{status // 100}xx").observe(seconds)


class RawFamily:
    """A family already in text format, for sources with thousands of samples (see probe_gauges)."""

    def __init__(self, name: str, documentation: str, kind: str, lines: list[str]) -> None:
        self.header = f"# HELP {name} {documentation}\n# TYPE {name} {kind}\n"
        self.lines = lines


def label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# Scrape-time sources. Each yields Metric families; a failing source is reported, not fatal.
MetricSource = Callable[[], Iterable[Metric | RawFamily]]
_sources: dict[str, MetricSource] = {}


def metric_source(name: str) -> Callable[[MetricSource], MetricSource]:
    def register(func: MetricSource) -> MetricSource:
        _sources[name] = func
        return func

    return register


class PlatformCollector:
    def collect(self) -> Iterable[Metric | RawFamily]:
        up = GaugeMetricFamily(
            "platform_metrics_source_up", "1 when a scrape-time metric source answered", labels=["source"]
        )
        took = GaugeMetricFamily(
            "platform_metrics_source_seconds", "Time a scrape-time metric source took", labels=["source"]
        )
        for name, source in _sources.items():
            started = time.perf_counter()
            try:
                families = list(source())
            except Exception:
                logger.exception("metric source %s failed", name)
                up.add_metric([name], 0)
                continue
            finally:
                took.add_metric([name], round(time.perf_counter() - started, 4))
            up.add_metric([name], 1)
            yield from families
        yield up
        yield took


_platform = PlatformCollector()


def exposition(families: Iterable[Metric | RawFamily]) -> bytes:
    """Prometheus text format for our own scrape-time families (gauges and one histogram).

    Eight times faster than prometheus_client's generic writer on the ~20,000 per-host samples of a
    5,000-tenant platform (it handles exemplars, timestamps and suffix rules we never use).
    """
    out: list[str] = []
    for family in families:
        if isinstance(family, RawFamily):
            out.append(family.header)
            out.extend(family.lines)
            continue
        out.append(f"# HELP {family.name} {family.documentation}\n# TYPE {family.name} {family.type}\n")
        for sample in family.samples:
            if sample.labels:
                labels = ",".join(f'{k}="{label_value(str(v))}"' for k, v in sample.labels.items())
                out.append(f"{sample.name}{{{labels}}} {floatToGoString(sample.value)}\n")
            else:
                out.append(f"{sample.name} {floatToGoString(sample.value)}\n")
    return "".join(out).encode()


PLATFORM_CACHE_KEY = "monitoring:metrics:platform"


def metrics_render() -> bytes:
    """The whole exposition: this process's (or every gunicorn worker's) metrics, then the platform's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry) + platform_exposition()


def platform_exposition() -> bytes:
    """The scrape-time platform gauges; with METRICS_CACHE_SECONDS, rendered once per that window
    for every scraper and worker (several Prometheus servers, HA pairs). Request and job counters
    are never cached."""
    seconds = settings.METRICS_CACHE_SECONDS
    if seconds <= 0:
        return exposition(_platform.collect())
    from django.core.cache import cache

    try:
        cached = cache.get(PLATFORM_CACHE_KEY)
    except Exception:  # the cache (Redis) being down must not take /metrics with it
        logger.warning("metrics cache unreachable", exc_info=True)
        cached = None
    if cached is not None:
        return cached
    body = exposition(_platform.collect())
    try:
        cache.set(PLATFORM_CACHE_KEY, body, seconds)
    except Exception:
        logger.warning("metrics cache unreachable", exc_info=True)
    return body


def job_record(connection, *, queue: str, outcome: str, seconds: float) -> None:
    """Called by the worker after each job; kept in Redis so every worker host adds to one histogram."""
    bucket = next((str(b) for b in JOB_BUCKETS if seconds <= b), "+Inf")
    with connection.pipeline() as pipe:
        pipe.hincrby(JOB_METRICS_KEY, f"{queue}|{outcome}|{bucket}", 1)
        pipe.hincrbyfloat(JOB_METRICS_KEY, f"{queue}|{outcome}|sum", seconds)
        pipe.execute()


def job_histograms(raw: dict[bytes, bytes]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "platform_rq_job_duration_seconds",
        "RQ job run time by queue and outcome",
        labels=["queue", "outcome"],
    )
    series: dict[tuple[str, str], dict[str, float]] = {}
    for field, value in raw.items():
        queue, outcome, bucket = field.decode().split("|")
        series.setdefault((queue, outcome), {})[bucket] = float(value)
    for (queue, outcome), counts in sorted(series.items()):
        running, buckets = 0.0, []
        for bound in [*map(str, JOB_BUCKETS), "+Inf"]:
            running += counts.get(bound, 0.0)
            buckets.append((bound, running))
        family.add_metric([queue, outcome], buckets, counts.get("sum", 0.0))
    return family
