"""/api/v1: releases, deployments (plan-only or run), their steps, rollbacks. CI uses these."""

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Router

from api import present
from api.apis import actor, staff
from api.schemas import DeployIn, DeploymentOut, PlanOnly, ReleaseIn, ReleaseOut, RollbackIn, responses
from core.db import connection
from deployments import jobs as deploy_jobs
from deployments import services
from deployments.models import Deployment

router = Router(tags=["deployments"])


@router.post("/releases", response=responses({201: ReleaseOut}), auth=staff("deployments:write"),
             url_name="release_create")
def release_create(request: HttpRequest, payload: ReleaseIn):
    """Record a release: a semantic version and an image per app service (immutable)."""
    connection.set_schema_to_public()
    release = services.release_create(actor=actor(request), **payload.dict())
    return 201, present.release_out(release)


@router.get("/releases/{version}", response=responses({200: ReleaseOut}), auth=staff("deployments:read"),
            url_name="release_get")
def release_get(request: HttpRequest, version: str):
    connection.set_schema_to_public()
    return present.release_out(services.release_get(version))


def _deployment(deployment_id: int) -> Deployment:
    connection.set_schema_to_public()
    return get_object_or_404(
        Deployment.objects.select_related("target__environment", "release", "previous_release"),
        pk=deployment_id,
    )


@router.post("/deployments", response=responses({200: PlanOnly, 202: DeploymentOut}),
             auth=staff("deployments:write"), url_name="deployment_create")
def deployment_create(request: HttpRequest, payload: DeployIn):
    """Deploy a release to an environment. `plan_only` answers what would change (200) and touches
    nothing; otherwise the deployment is queued (202) and `status_url` shows its steps."""
    connection.set_schema_to_public()
    if payload.plan_only:
        target = services.environment_target(environment=payload.environment)
        plan = services.deployment_plan(
            target=target, release=services.release_get(payload.version), strategy=payload.strategy
        )
        return 200, {"environment": payload.environment, "version": payload.version, "plan": plan}
    who = actor(request)
    deployment = services.deployment_create(
        environment=payload.environment, version=payload.version, strategy=payload.strategy, actor=who
    )
    deploy_jobs.deploy_job.delay(deployment.pk, *who.job_args)
    return 202, present.deployment_out(_deployment(deployment.pk))


@router.get("/deployments/{deployment_id}", response=responses({200: DeploymentOut}),
            auth=staff("deployments:read"), url_name="deployment_get")
def deployment_get(request: HttpRequest, deployment_id: int):
    """A deployment with every step and its log lines; poll until `status` is final."""
    return present.deployment_out(_deployment(deployment_id))


@router.post("/rollbacks", response=responses({202: DeploymentOut}),
             auth=staff("deployments:write"), url_name="deployment_rollback")
def deployment_rollback(request: HttpRequest, payload: RollbackIn):
    """Put an earlier successful release back (the one before the live one by default)."""
    connection.set_schema_to_public()
    who = actor(request)
    deployment = services.rollback_create(
        environment=payload.environment, actor=who, to_version=payload.to_version,
        confirm_migrations=payload.confirm_migrations,
    )
    deploy_jobs.deploy_job.delay(deployment.pk, *who.job_args)
    return 202, present.deployment_out(_deployment(deployment.pk))
