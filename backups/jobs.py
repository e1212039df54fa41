"""RQ jobs: thin, idempotent wrappers that load by id and call one service.

Each is bound to its queue here: dumps, exports and their verification on "backups" (worked by
backups.worker.BackupWorker), restores, drills and retention on "long", the schedule tick on
"default".
"""

from django.conf import settings

from backups.errors import BackupError
from backups.models import Backup
from backups.selectors import tenants_due

# Modules, not names: runs and exports import this module back to enqueue these jobs.
from backups.services import dr, drills, exports, offsite, restore, retention, runs
from core.audit import Actor
from core.db import connection
from core.jobs import job
from tenants.models import Tenant


@job("backups")
def backup_run_job(backup_id: str, actor_type: str, actor_name: str) -> str:
    return runs.backup_run(backup_id=backup_id, actor=Actor.for_job(actor_type, actor_name)).status


@job("long")
def restore_in_place_job(
    tenant_id: str, backup_id: str, confirm: str, actor_type: str, actor_name: str
) -> str:
    connection.set_schema_to_public()
    tenant = Tenant.objects.get(pk=tenant_id)
    return restore.backup_restore_in_place(
        tenant=tenant, backup_id=backup_id, confirm=confirm, actor=Actor.for_job(actor_type, actor_name)
    ).status


@job("long")
def restore_as_new_job(backup_id: str, subdomain: str, actor_type: str, actor_name: str) -> str:
    connection.set_schema_to_public()
    if Tenant.objects.filter(subdomain=subdomain, status=Tenant.Status.ACTIVE).exists():
        return "succeeded"  # already done by an earlier run of this job
    return restore.backup_restore_as_new(
        backup_id=backup_id, subdomain=subdomain, actor=Actor.for_job(actor_type, actor_name)
    ).status


@job("backups")
def export_run_job(export_id: str, actor_type: str, actor_name: str) -> str:
    return exports.export_run(export_id=export_id, actor=Actor.for_job(actor_type, actor_name)).status


@job("backups")
def backup_verify_job(backup_id: str, actor_type: str, actor_name: str) -> str:
    connection.set_schema_to_public()
    backup = Backup.objects.get(pk=backup_id)
    return runs.backup_verify(backup=backup, actor=Actor.for_job(actor_type, actor_name)).status


@job("default")
def backup_schedule_job() -> int:
    """Every minute: reap dead backups, then queue the tenants whose staggered slot has come."""
    actor = Actor.system("backup schedule")
    runs.backup_reap(actor=actor)
    queued = 0
    for tenant in tenants_due():
        try:
            runs.backup_create(
                kind=Backup.Kind.TENANT, tenant=tenant, purpose=Backup.Purpose.SCHEDULED, actor=actor
            )
            queued += 1
        except BackupError:
            continue  # busy or not backupable now; the next tick tries again
    return queued


@job("backups")
def backup_platform_job() -> str:
    actor = Actor.system("backup schedule")
    backup = runs.backup_create(
        kind=Backup.Kind.PLATFORM, purpose=Backup.Purpose.SCHEDULED, actor=actor, enqueue=False
    )
    return runs.backup_run(backup_id=backup.pk, actor=actor).status


@job("long")
def backup_prune_job() -> int:
    return len(retention.backup_prune(dry_run=False, actor=Actor.system("backup retention")).delete)


@job("long")
def restore_drill_job(sample: int | None = None) -> int:
    ran = drills.drill_sample(
        sample=sample or settings.BACKUP_DRILL_SAMPLE, actor=Actor.system("restore drill")
    )
    return sum(1 for d in ran if d.passed)


@job("long")
def restore_drill_one_job(backup_id: str, actor_type: str, actor_name: str) -> bool:
    connection.set_schema_to_public()
    backup = Backup.objects.get(pk=backup_id)
    return drills.drill_run(backup=backup, actor=Actor.for_job(actor_type, actor_name)).passed


# === Off-site copies and disaster-recovery drills (backups/services/offsite.py, dr.py) ===


# At the front of the queue: a dump's copy runs next, not after the rest of a burst of dumps, so
# the copy lag (what a lost region would lose) stays one copy long (docs/benchmarks.md).
@job("backups", at_front=True)
def offsite_copy_job(copy_id: str, actor_type: str, actor_name: str) -> str:
    """Copy one dump or export to the second store and read it back there (retried by the sweep)."""
    return offsite.offsite_copy_run(copy_id=copy_id, actor=Actor.for_job(actor_type, actor_name)).status


@job("backups")
def offsite_verify_job(copy_id: str, actor_type: str, actor_name: str) -> str:
    from backups.models import OffsiteCopy

    connection.set_schema_to_public()
    copy = OffsiteCopy.objects.get(pk=copy_id)
    return offsite.offsite_copy_verify(copy=copy, actor=Actor.for_job(actor_type, actor_name)).status


@job("default")
def offsite_sweep_job() -> int:
    """Every minute: queue what has no off-site copy yet, retry failures whose backoff has passed."""
    result = offsite.offsite_sweep(actor=Actor.system("off-site copies"))
    return result.queued + result.retried + result.requeued


@job("backups")
def offsite_reverify_job() -> int:
    """Daily: read back the copies checked longest ago; a mismatch marks them corrupt."""
    checked = offsite.offsite_reverify(actor=Actor.system("off-site copies"))
    return sum(1 for c in checked if c.status == "verified")


@job("long")
def offsite_prune_job() -> int:
    return len(offsite.offsite_prune(dry_run=False, actor=Actor.system("off-site retention")))


@job("long")
def dr_drill_job(
    subdomain: str = "", trigger: str = "scheduled", actor_type: str = "", actor_name: str = ""
) -> bool | None:
    """Monthly (and on demand): restore the platform and a shop from the second store alone."""
    actor = Actor.for_job(actor_type, actor_name) if actor_type else Actor.system("disaster-recovery drill")
    drill = dr.dr_drill_if_configured(subdomain=subdomain or None, actor=actor, trigger=trigger)
    return None if drill is None else drill.passed
# === Continuous archive (pgBackRest, backups/pitr/) ===


@job("backups")
def pitr_backup_job(backup_type: str = "auto") -> list[str]:
    """Daily: a full or differential pgBackRest backup into each repository (a no-op when off)."""
    from backups.pitr import config
    from backups.pitr.services import pitr_backup_run

    if not config.enabled():
        return []
    done = pitr_backup_run(backup_type=backup_type, actor=Actor.system("pitr schedule"))
    return [row.label for row in done]


@job("default")
def pitr_status_job() -> bool:
    """Every 5 minutes: what pgBackRest lists (backups, expiries, each repository's WAL range)."""
    from backups.pitr import config
    from backups.pitr.services import pitr_status_refresh

    return config.enabled() and pitr_status_refresh().stanza_ok


@job("long")
def pitr_restore_tenant_job(
    tenant_id: str, to_time: str, as_new: str, confirm: str, actor_type: str, actor_name: str
) -> str:
    from backups.pitr.restore import tenant_restore_to_time, tenant_restore_to_time_as_new
    from backups.pitr.services import moment_parse

    connection.set_schema_to_public()
    tenant = Tenant.objects.get(pk=tenant_id)
    actor, moment = Actor.for_job(actor_type, actor_name), moment_parse(to_time)
    if as_new:
        if Tenant.objects.filter(subdomain=as_new, status=Tenant.Status.ACTIVE).exists():
            return "succeeded"  # already done by an earlier run of this job
        restored = tenant_restore_to_time_as_new(tenant=tenant, to_time=moment, subdomain=as_new, actor=actor)
        return restored.status
    return tenant_restore_to_time(tenant=tenant, to_time=moment, confirm=confirm, actor=actor).status
