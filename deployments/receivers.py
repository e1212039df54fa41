"""Receivers of the core's signals (connected in DeploymentsConfig.ready)."""

from typing import Any

from core.audit import Actor


def edge_changed_sync_targets(sender: Any, *, actor: Actor, reason: str = "", **kwargs: Any) -> None:
    """What the edge serves changed: request a (coalesced) push to every compose target's edge and a
    domains sync of every AWS target, both after commit."""
    from deployments.edges import target_edges_sync_request
    from deployments.jobs import aws_domains_sync_enqueue

    target_edges_sync_request(reason=reason)
    aws_domains_sync_enqueue(actor=actor)
