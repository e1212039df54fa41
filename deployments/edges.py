"""Compose targets' edges kept in step with what the control plane serves (services).

``tenants.signals.edge_changed`` (a domain became active or stopped being served, a certificate was
issued, renewed or removed) asks for a sync; requests coalesce: while one sync is queued and not
started, further requests add nothing, so a burst of 1,000 issuances pushes once or twice, not
1,000 times. The sync pushes the current certificates and config to every compose target whose
stack gives its edge public listeners, keeping the colour each edge serves.
"""

import logging
from dataclasses import dataclass

import django_rq
from django.db import transaction
from docker.errors import DockerException

from core.audit import Action, Actor, audit_record
from core.db import connection
from deployments.engines.compose import ComposeEngine
from deployments.errors import StepFailed, TargetUnreachable
from deployments.models import Target
from deployments.stack import edge_public

logger = logging.getLogger(__name__)

PENDING = "platform:target-edges-sync-pending"
PENDING_SECONDS = 600  # a lost job must not block syncs for longer than this


@dataclass(frozen=True)
class EdgeSyncResult:
    target: str
    domains: int
    error: str = ""


def target_edges_sync_request(*, reason: str = "") -> None:
    """Queue one sync of every target's edge once the caller's transaction commits, unless one is
    already queued and not started."""
    from deployments.jobs import target_edges_sync_job  # jobs import this module

    def queue() -> None:
        if django_rq.get_connection("default").set(PENDING, reason or "changed", nx=True, ex=PENDING_SECONDS):
            target_edges_sync_job.delay()

    transaction.on_commit(queue)


def edge_targets() -> list[Target]:
    """Compose targets whose edge serves shops over TLS and has been deployed to."""
    connection.set_schema_to_public()
    targets = Target.objects.filter(kind=Target.Kind.COMPOSE).exclude(live_color="").order_by("name")
    return [t for t in targets if any(edge_public(t.stack or {}))]


def target_edge_sync(*, target: Target, actor: Actor) -> EdgeSyncResult:
    """Push the current certificates and config to one target's edge (it keeps serving its colour)."""
    try:
        domains = ComposeEngine(target).proxy.push()
    except (StepFailed, TargetUnreachable, DockerException, OSError) as exc:
        error = str(exc)[-2000:]
        logger.error("edge of target %s not updated: %s", target.name, error)
        audit_record(
            actor=actor, action=Action.TARGET_EDGE_PUSH_FAILED, target=target.name, details={"error": error}
        )
        return EdgeSyncResult(target.name, 0, error)
    audit_record(
        actor=actor, action=Action.TARGET_EDGE_PUSHED, target=target.name, details={"domains": domains}
    )
    return EdgeSyncResult(target.name, domains)


def target_edges_sync(*, actor: Actor) -> list[EdgeSyncResult]:
    """Sync every target's edge. Changes made after this starts queue the next sync."""
    django_rq.get_connection("default").delete(PENDING)
    return [target_edge_sync(target=target, actor=actor) for target in edge_targets()]
