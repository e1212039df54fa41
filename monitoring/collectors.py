"""Scrape-time platform gauges: a handful of GROUP BY queries and Redis reads, never per-tenant loops."""

import time
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from rq import Queue, Worker
from rq.registry import DeferredJobRegistry, FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from monitoring.health import redis_client
from monitoring.metrics import JOB_METRICS_KEY, RawFamily, job_histograms, label_value, metric_source
from monitoring.models import ProbeState
from tenants.models import Domain, Tenant


@metric_source("tenants")
def tenant_gauges():
    connection.set_schema_to_public()
    tenants = GaugeMetricFamily("platform_tenants", "Tenants by status and plan", labels=["status", "plan"])
    for row in Tenant.objects.values("status", "plan__slug").annotate(n=Count("pk")).order_by():
        tenants.add_metric([row["status"], row["plan__slug"]], row["n"])
    domains = GaugeMetricFamily("platform_domains", "Domains by status and kind", labels=["status", "kind"])
    for row in Domain.objects.values("status", "kind").annotate(n=Count("pk")).order_by():
        domains.add_metric([row["status"], row["kind"]], row["n"])
    return [tenants, domains]


def queue_states(conn) -> dict[str, dict[str, int]]:
    """Jobs per queue and state, straight from RQ's registries."""
    states = {}
    for name in settings.RQ_QUEUES:
        queue = Queue(name, connection=conn)
        states[name] = {
            "queued": queue.count,
            "started": StartedJobRegistry(queue=queue).count,
            "failed": FailedJobRegistry(queue=queue).count,
            "scheduled": ScheduledJobRegistry(queue=queue).count,
            "deferred": DeferredJobRegistry(queue=queue).count,
        }
    return states


@metric_source("rq")
def rq_gauges():
    conn = redis_client()
    jobs = GaugeMetricFamily("platform_rq_jobs", "RQ jobs by queue and state", labels=["queue", "state"])
    for queue, counts in queue_states(conn).items():
        for state, n in counts.items():
            jobs.add_metric([queue, state], n)
    workers = Worker.all(connection=conn)
    per_queue = GaugeMetricFamily("platform_rq_workers", "Live RQ workers by queue", labels=["queue"])
    for name in settings.RQ_QUEUES:
        per_queue.add_metric([name], sum(1 for w in workers if name in w.queue_names()))
    beat = GaugeMetricFamily(
        "platform_rq_worker_heartbeat_age_seconds",
        "Seconds since each worker's last heartbeat",
        labels=["worker"],
    )
    now = time.time()
    for worker in workers:
        if worker.last_heartbeat:
            beat.add_metric([worker.name], round(now - worker.last_heartbeat.timestamp(), 1))
    return [jobs, per_queue, beat, job_histograms(conn.hgetall(JOB_METRICS_KEY))]


@metric_source("probes")
def probe_gauges():
    """One line per shop host and gauge, written straight to text (5,000+ hosts on a big platform)."""
    since = timezone.now() - timedelta(days=1)
    connection.set_schema_to_public()
    rows = ProbeState.objects.filter(checked_at__gte=since).values_list(
        "tenant__subdomain", "host", "ok", "latency_ms", "tls_expires_at"
    )
    now = timezone.now()
    up, latency, cert = [], [], []
    for subdomain, host, ok, latency_ms, expires in rows.iterator(chunk_size=5000):
        labels = f'{{tenant="{label_value(subdomain)}",host="{label_value(host)}"}}'
        up.append(f"platform_probe_up{labels} {1.0 if ok else 0.0}\n")
        if latency_ms is not None:
            latency.append(f"platform_probe_latency_seconds{labels} {latency_ms / 1000!r}\n")
        if expires is not None:
            days = round((expires - now).total_seconds() / 86400, 2)
            cert.append(f"platform_certificate_days_left{labels} {days!r}\n")
    return [
        RawFamily("platform_probe_up", "1 when the last probe of a shop host succeeded", "gauge", up),
        RawFamily(
            "platform_probe_latency_seconds", "Latency of the last probe of a shop host", "gauge", latency
        ),
        RawFamily(
            "platform_certificate_days_left",
            "Days until the certificate served for a host expires (from the last probe)",
            "gauge",
            cert,
        ),
    ]


@metric_source("facts")
def fact_gauges():
    """Backup age, last drill and last deployment per environment, from the wired fact sources."""
    from monitoring import sources

    families = []
    now = timezone.now()
    try:
        backups = list(sources.source("backups")())
    except sources.SourceUnavailable:
        backups = None
    if backups is not None:
        # Keyed by the id's text: facts may carry UUIDs or strings.
        subdomains = {str(pk): sub for pk, sub in Tenant.objects.values_list("id", "subdomain")}
        ages, missing = [], []
        for fact in backups:
            tenant = label_value(subdomains.get(str(fact.tenant_id), str(fact.tenant_id)))
            if fact.last_success_at is None:
                missing.append(f'platform_backup_missing{{tenant="{tenant}"}} 1.0\n')
            else:
                age = float(round((now - fact.last_success_at).total_seconds()))
                ages.append(f'platform_backup_age_seconds{{tenant="{tenant}"}} {age!r}\n')
        families += [
            RawFamily(
                "platform_backup_age_seconds", "Age of each tenant's newest good backup", "gauge", ages
            ),
            RawFamily("platform_backup_missing", "1 for a tenant that has no good backup", "gauge", missing),
        ]
    for name, metric, help_text, label, key in (
        (
            "drills",
            "platform_restore_drill_ok",
            "1 when the latest restore drill of a scope passed",
            "scope",
            "key",
        ),
        (
            "deployments",
            "platform_deployment_ok",
            "1 when the latest deployment succeeded",
            "environment",
            "environment",
        ),
    ):
        try:
            facts = list(sources.source(name)())
        except sources.SourceUnavailable:
            continue
        family = GaugeMetricFamily(metric, help_text, labels=[label])
        for fact in facts:
            passed = fact.ok if name == "drills" else fact.status == "succeeded"
            family.add_metric([getattr(fact, key)], 1 if passed else 0)
        families.append(family)
    return families
