"""Releases, deployments and rollbacks: one set of services behind the admin, commands and jobs.

A deployment is validated completely before anything is touched, takes the target's lock (a row
with an expiry, so a crashed worker cannot hold it forever), records every step with timestamps,
and on any failed step puts the previous release back in front before it reports the failure.
"""

import logging
import os
import re
import subprocess
import sys
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from core.audit import Action, Actor, audit_record
from deployments.engines import Engine, engine_for
from deployments.errors import (
    DeploymentError,
    DeploymentValidationError,
    StepFailed,
    TargetLocked,
    TargetUnreachable,
)
from deployments.models import Deployment, Environment, Release, Target
from deployments.recorder import Recorder
from deployments.secrets import stack_secret_problems
from deployments.stack import app_services, render_compose, render_compose_proxy_config, stack_problems
from deployments.stack_model import route_path_problem
from deployments.validation import GIT_SHA, image_ref_parse, version_normalise

logger = logging.getLogger(__name__)


# -- lookups and validation -----------------------------------------------------------------------


def environment_target(*, environment: str) -> Target:
    """The enabled target of an enabled environment, or an error naming what exists."""
    env = Environment.objects.filter(name=(environment or "").strip()).first()
    if env is None:
        known = (
            ", ".join(Environment.objects.values_list("name", flat=True)) or "none yet (add one in the admin)"
        )
        raise DeploymentValidationError(f"No environment named {environment!r}. Environments: {known}.")
    if not env.is_enabled:
        raise DeploymentValidationError(
            f"Environment {env.name!r} is disabled; enable it in the admin first."
        )
    target = Target.objects.filter(environment=env).select_related("live_release").first()
    if target is None:
        raise DeploymentValidationError(f"Environment {env.name!r} has no target; add one in the admin.")
    if not target.is_enabled:
        raise DeploymentValidationError(
            f"Target {target.name!r} of {env.name!r} is disabled; enable it first."
        )
    return target


def target_problems(target: Target, *, include_missing_secrets: bool = True) -> list[str]:
    """Everything that stops a deploy to ``target``; without missing secrets, what its stack must change."""
    problems = stack_problems(target.stack) + stack_secret_problems(
        environment=target.environment,
        stack=target.stack,
        kind=target.kind,
        include_missing=include_missing_secrets,
    )
    if target.kind == Target.Kind.COMPOSE:
        if not target.docker_host.startswith(("unix://", "tcp://", "ssh://")):
            problems.append("docker_host must start with unix://, tcp:// or ssh://.")
        if target.docker_host.startswith("tcp://") and bool(target.docker_tls_cert) != bool(
            target.docker_tls_key
        ):
            problems.append("Give both docker_tls_cert and docker_tls_key, or neither.")
        host, sep, port = target.edge_listen.rpartition(":")
        bad_host = not re.fullmatch(r"[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]", host)  # written into nginx
        if not sep or bad_host or not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"edge_listen {target.edge_listen!r} must be host:port, e.g. 0.0.0.0:80.")
    else:
        if not target.aws_region or not target.ecs_cluster:
            problems.append("An AWS target needs aws_region and ecs_cluster.")
        missing = [s for s in app_services(target.stack) if s not in (target.ecs_services or {})]
        if missing:
            problems.append(f"ecs_services lacks an ECS service name for: {', '.join(missing)}.")
    return problems


def stack_refusals(*, environment: Environment, stack: Any, kind: str = Target.Kind.COMPOSE) -> list[str]:
    """What a stack may never say, so saving it is refused: unsafe route paths, forbidden secret names."""
    routes = ((stack.get("edge") or {}).get("routes") or {}) if isinstance(stack, dict) else {}
    unsafe = [p for p in map(route_path_problem, routes if isinstance(routes, dict) else ()) if p]
    return unsafe + stack_secret_problems(
        environment=environment, stack=stack, kind=kind, include_missing=False
    )


def release_problems(*, release: Release, target: Target) -> list[str]:
    missing = [s for s in app_services(target.stack) if s not in release.images]
    if missing:
        return [
            f"Release {release.version} has no image for {', '.join(missing)}, which the stack of "
            f"{target.name!r} needs; create a release that names an image for every app service."
        ]
    return []


def release_create(
    *,
    version: str,
    images: dict[str, str],
    actor: Actor,
    git_sha: str = "",
    notes: str = "",
    backward_compatible_migrations: bool = True,
) -> Release:
    version = version_normalise(version)
    if not isinstance(images, dict) or not images:
        raise DeploymentValidationError(
            "A release needs an image per service, e.g. backend=registry/api:1.4.0."
        )
    for service, ref in images.items():
        image_ref_parse(service, ref)
    git_sha = (git_sha or "").strip().lower()
    if git_sha and not GIT_SHA.match(git_sha):
        raise DeploymentValidationError(f"{git_sha!r} is not a git commit sha (7-40 hex digits).")
    if Release.objects.filter(version=version).exists():
        raise DeploymentValidationError(
            f"Release {version} already exists; releases are immutable, so bump the version."
        )
    release = Release.objects.create(
        version=version,
        images={k: v.strip() for k, v in images.items()},
        git_sha=git_sha,
        notes=notes,
        backward_compatible_migrations=backward_compatible_migrations,
    )
    audit_record(
        actor=actor,
        action=Action.RELEASE_CREATED,
        target=f"release {version}",
        details={"images": release.images, "git_sha": git_sha},
    )
    return release


def release_get(version: str) -> Release:
    version = version_normalise(version)
    release = Release.objects.filter(version=version).first()
    if release is None:
        latest = ", ".join(Release.objects.values_list("version", flat=True)[:5]) or "none yet"
        raise DeploymentValidationError(f"No release {version}. Latest releases: {latest}.")
    return release


# -- the lock -------------------------------------------------------------------------------------


def target_lock(*, target: Target, deployment: Deployment) -> None:
    """Take the target's deploy lock, or say who holds it. An expired lock is free."""
    now = timezone.now()
    expires = now + timedelta(seconds=settings.DEPLOY_LOCK_SECONDS)
    taken = (
        Target.objects.filter(pk=target.pk)
        .filter(Q(lock_expires_at__isnull=True) | Q(lock_expires_at__lte=now))
        .update(lock_deployment=deployment, lock_expires_at=expires)
    )
    if not taken:
        holder = Target.objects.select_related("lock_deployment__release").get(pk=target.pk)
        held = holder.lock_deployment
        raise TargetLocked(
            f"Target {target.name!r} is busy with deployment #{held.pk if held else '?'}"
            f"{f' of {held.release.version} ({held.status})' if held else ''}; its lock expires at "
            f"{holder.lock_expires_at:%H:%M:%S} UTC. Wait for it to finish, then deploy again."
        )
    # A deployment whose worker died (or never came) while holding an expired lock is over for good.
    Deployment.objects.filter(target=target, status__in=UNFINISHED).exclude(pk=deployment.pk).update(
        status=Deployment.Status.FAILED, finished_at=now, error=STALE_ERROR
    )


UNFINISHED = [Deployment.Status.PLANNED, Deployment.Status.RUNNING, Deployment.Status.ROLLING_BACK]
STALE_ERROR = (
    "The worker running this deployment stopped, or none picked it up, before its lock expired; "
    "check the target's state, then deploy again."
)


def deployments_reap(*, actor: Actor) -> int:
    """Mark deployments whose lock expired (crashed or missing worker) as failed, so they show as such."""
    now = timezone.now()
    stale = Deployment.objects.filter(status__in=UNFINISHED).exclude(
        target__lock_deployment=F("pk"), target__lock_expires_at__gt=now
    )
    count = 0
    for deployment in stale.select_related("target__environment", "release"):
        with transaction.atomic():
            if not Deployment.objects.filter(pk=deployment.pk, status__in=UNFINISHED).update(
                status=Deployment.Status.FAILED, finished_at=now, error=STALE_ERROR
            ):
                continue
            target_unlock(target=deployment.target, deployment=deployment)
            audit_record(
                actor=actor,
                action=Action.DEPLOYMENT_FAILED,
                target=f"{deployment.target.environment} {deployment.release.version}",
                details={"deployment": deployment.pk, "outcome": "failed", "error": STALE_ERROR},
            )
        count += 1
    return count


def target_unlock(*, target: Target, deployment: Deployment) -> None:
    Target.objects.filter(pk=target.pk, lock_deployment=deployment).update(
        lock_deployment=None, lock_expires_at=None
    )


# -- planning -------------------------------------------------------------------------------------


def deployment_plan(*, target: Target, release: Release, strategy: str) -> dict[str, Any]:
    """What a deployment would change, read from the target itself (nothing is touched)."""
    try:
        return engine_for(target).plan(release, strategy)
    except DeploymentError:
        raise
    except Exception as exc:  # the SDKs' own errors: say where, not a traceback
        raise TargetUnreachable(f"Could not read the state of target {target.name!r}: {exc}") from None


def deployment_create(
    *,
    environment: str,
    version: str,
    actor: Actor,
    strategy: str = Deployment.Strategy.BLUE_GREEN,
    is_rollback: bool = False,
    confirm_migrations: bool = False,
) -> Deployment:
    """Validate everything, reach the target, take its lock and record a planned deployment."""
    if strategy not in Deployment.Strategy.values:
        raise DeploymentValidationError(
            f"Unknown strategy {strategy!r}; use one of {', '.join(Deployment.Strategy.values)}."
        )
    target = environment_target(environment=environment)
    release = release_get(version)
    problems = target_problems(target) + release_problems(release=release, target=target)
    if problems:
        raise DeploymentValidationError(" ".join(problems))
    previous = target.live_release
    if previous and previous.pk == release.pk and not is_rollback:
        raise DeploymentValidationError(
            f"Release {release.version} is already live on {environment}; create a new release to deploy."
        )
    if is_rollback:
        _rollback_checks(target=target, release=release, confirm_migrations=confirm_migrations)
    plan = deployment_plan(target=target, release=release, strategy=strategy)  # fails fast if unreachable
    with transaction.atomic():
        deployment = Deployment.objects.create(
            target=target,
            release=release,
            previous_release=previous,
            strategy=strategy,
            plan=plan,
            is_rollback=is_rollback,
            requested_by=f"{actor.type}:{actor.name}"[:200],
        )
        target_lock(target=target, deployment=deployment)
    audit_record(
        actor=actor,
        action=Action.ROLLBACK_PLANNED if is_rollback else Action.DEPLOYMENT_PLANNED,
        target=f"{environment} {release.version}",
        details={
            "deployment": deployment.pk,
            "strategy": strategy,
            "from": previous.version if previous else None,
        },
    )
    return deployment


def _rollback_checks(*, target: Target, release: Release, confirm_migrations: bool) -> None:
    if not Deployment.objects.filter(
        target=target, release=release, status=Deployment.Status.SUCCEEDED
    ).exists():
        raise DeploymentValidationError(
            f"Release {release.version} never succeeded on {target.environment}; roll back only to a release "
            "that was live there (see the deployments list)."
        )
    live = target.live_release
    if live and live.pk == release.pk:
        raise DeploymentValidationError(f"Release {release.version} is already live on {target.environment}.")
    # Every release newer than the rollback target that went live here and changed the schema in a way
    # older code cannot run on.
    since = (
        Deployment.objects.filter(target=target, release=release, status=Deployment.Status.SUCCEEDED)
        .latest("finished_at")
        .finished_at
    )
    breaking = sorted(
        {
            d.release.version
            for d in Deployment.objects.filter(
                target=target,
                status=Deployment.Status.SUCCEEDED,
                finished_at__gt=since,
                release__backward_compatible_migrations=False,
            ).select_related("release")
        }
    )
    if breaking and not confirm_migrations:
        raise DeploymentValidationError(
            f"Rolling back to {release.version} goes past {', '.join(breaking)}, whose migrations are not "
            "backward compatible: the old code may fail on the new schema. Restore a backup or confirm "
            "with --confirm-migrations (admin: tick 'I understand the migrations')."
        )


def rollback_create(
    *, environment: str, actor: Actor, to_version: str | None = None, confirm_migrations: bool = False
) -> Deployment:
    """A blue-green deployment of an earlier successful release (the one before the live one by default)."""
    target = environment_target(environment=environment)
    if to_version is None:
        earlier = (
            Deployment.objects.filter(target=target, status=Deployment.Status.SUCCEEDED)
            .exclude(release=target.live_release)
            .order_by("-finished_at")
            .select_related("release")
            .first()
        )
        if earlier is None:
            raise DeploymentValidationError(
                f"Nothing to roll back to on {environment}: no earlier release succeeded there."
            )
        to_version = earlier.release.version
    return deployment_create(
        environment=environment,
        version=to_version,
        actor=actor,
        is_rollback=True,
        confirm_migrations=confirm_migrations,
    )


# -- running --------------------------------------------------------------------------------------


def migrations_run(*, recorder: Recorder) -> None:
    """The migration phase without a release image to run it: this control plane's own
    `manage.py migrate_schemas` on the direct connection, each output line into the step log."""
    from deployments.engines.oneoff import direct_database_url

    cmd = [sys.executable, str(settings.BASE_DIR / "manage.py"), *settings.DEPLOY_MIGRATE_COMMAND]
    env = dict(os.environ, DATABASE_URL=direct_database_url())
    recorder.log("$ manage.py " + " ".join(settings.DEPLOY_MIGRATE_COMMAND))
    with subprocess.Popen(
        cmd,
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None  # stdout=PIPE
        for line in proc.stdout:
            if line.strip():
                recorder.log(line.rstrip())
        code = proc.wait()
    if code:
        raise StepFailed(f"Migrations failed (exit status {code}); see the lines above.")


def deployment_run(*, deployment: Deployment, actor: Actor) -> Deployment:
    """Apply a planned deployment; any failed step rolls back to the previous release."""
    deployment.refresh_from_db()
    if deployment.status != Deployment.Status.PLANNED:
        return deployment  # already ran (a job retried): nothing to do
    target = Target.objects.select_related("live_release").get(pk=deployment.target_id)
    if target.lock_deployment_id != deployment.pk:
        target_lock(target=target, deployment=deployment)
    rec = Recorder(deployment)
    deployment.status, deployment.started_at = Deployment.Status.RUNNING, timezone.now()
    deployment.save(update_fields=["status", "started_at"])
    engine = engine_for(target, rec)
    release = deployment.release
    run_migrations = target.run_migrations

    def migrate() -> None:
        if run_migrations:
            migrations_run(recorder=rec)
        else:
            rec.log("migrations are switched off for this target")

    try:
        with rec.step("connect"):
            rec.log(engine.check_reachable())
        live_color = engine.apply(release, deployment.strategy, rec.step, migrate)
    except Exception as exc:  # any failure, ours or the SDKs', ends in the rollback
        _fail(deployment=deployment, target=target, engine=engine, rec=rec, exc=exc, actor=actor)
    else:
        Target.objects.filter(pk=target.pk).update(live_release=release, live_color=live_color)
        deployment.status = Deployment.Status.SUCCEEDED
        deployment.finished_at = timezone.now()
        deployment.save(update_fields=["status", "finished_at"])
        audit_record(
            actor=actor,
            action=Action.ROLLBACK_SUCCEEDED if deployment.is_rollback else Action.DEPLOYMENT_SUCCEEDED,
            target=f"{target.environment} {release.version}",
            details={
                "deployment": deployment.pk,
                "outcome": "succeeded",
                "strategy": deployment.strategy,
                "from": deployment.previous_release.version if deployment.previous_release else None,
            },
        )
    finally:
        target_unlock(target=target, deployment=deployment)
    return deployment


def _fail(
    *, deployment: Deployment, target: Target, engine: Engine, rec: Recorder, exc: Exception, actor: Actor
) -> None:
    if not isinstance(exc, DeploymentError):
        logger.exception("deployment %s crashed", deployment.pk)
    deployment.error = rec.scrub(str(exc))[:4000]
    if not engine.touched:
        deployment.status = Deployment.Status.FAILED
    else:
        deployment.status = Deployment.Status.ROLLING_BACK
        deployment.save(update_fields=["status", "error"])
        try:
            with rec.step("automatic rollback"):
                engine.undo()
                previous = deployment.previous_release
                rec.log(f"{previous.version if previous else 'nothing'} is serving again")
            deployment.status = Deployment.Status.ROLLED_BACK
        except Exception as undo_exc:  # the target needs a person now; say so
            logger.exception("rollback of deployment %s failed", deployment.pk)
            deployment.status = Deployment.Status.FAILED
            deployment.error += f"\nAutomatic rollback also failed: {undo_exc}. Inspect the target."
    deployment.finished_at = timezone.now()
    deployment.save(update_fields=["status", "error", "finished_at"])
    audit_record(
        actor=actor,
        action=Action.DEPLOYMENT_FAILED,
        target=f"{target.environment} {deployment.release.version}",
        details={
            "deployment": deployment.pk,
            "outcome": deployment.status,
            "error": rec.scrub(str(exc))[:500],
        },
    )


def target_render_compose(*, target: Target, release: Release | None = None) -> str:
    # The file names secrets as ${NAME} for whoever runs it; the store need not hold them yet.
    problems = target_problems(target, include_missing_secrets=False)
    if problems:
        raise DeploymentValidationError(" ".join(problems))
    release = release or target.live_release
    return render_compose(
        stack=target.stack,
        images=release.images if release else {},
        edge_image=target.edge_image,
        edge_listen=target.edge_listen,
        project=target.project or target.name,
    )


def target_render_proxy_config(*, target: Target) -> str:
    """The nginx.conf of the release proxy that the rendered docker-compose.yml mounts."""
    problems = target_problems(target, include_missing_secrets=False)
    if problems:
        raise DeploymentValidationError(" ".join(problems))
    return render_compose_proxy_config(stack=target.stack, edge_listen=target.edge_listen)
