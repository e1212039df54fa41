"""Receivers of the core's signals (connected in DeploymentsConfig.ready)."""

from typing import Any

from core.audit import Actor


def edge_changed_sync_aws(sender: Any, *, actor: Actor, reason: str = "", **kwargs: Any) -> None:
    """What the edge serves changed: queue a domains sync for every AWS target (after commit)."""
    from deployments.jobs import aws_domains_sync_enqueue

    aws_domains_sync_enqueue(actor=actor)
