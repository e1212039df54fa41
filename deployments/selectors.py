"""Read-side queries about deployments. No side effects."""

from datetime import datetime

from core.admin_links import admin_path
from core.facts import DeploymentFact
from deployments.models import Deployment


def deployment_facts(since: datetime | None = None) -> list[DeploymentFact]:
    """Deployments that ended since ``since`` (rules), or the latest per environment (dashboard)."""
    finished = Deployment.objects.filter(status__in=Deployment.FINISHED).select_related(
        "target__environment", "release"
    )
    if since is not None:
        finished = finished.filter(finished_at__gte=since)
    else:
        finished = finished.order_by("target__environment_id", "-finished_at").distinct(
            "target__environment_id"
        )
    facts = []
    for d in finished:
        assert d.finished_at is not None  # deployments.services sets it with every finished status
        facts.append(
            DeploymentFact(
                str(d.pk), d.target.environment.name, d.status, d.finished_at,
                detail=f"release {d.release}",
                link=admin_path(d),
            )
        )
    return facts
