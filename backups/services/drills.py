"""Restore drills: restore a backup into a scratch database and check it against its manifest.

The checks (sha256, restore, row counts, migration state) are recorded on a RestoreDrill row;
a drill that finds the stored object corrupt fails that backup too.
"""

import random
import time
from typing import Any

from django.utils import timezone

from backups import pgtools
from backups.models import Backup, RestoreDrill
from backups.services._common import check_storage, mark_failed
from backups.services.integrity import manifest_compare, restore_hashed
from core.audit import Action, Actor, audit_record
from core.db import connection


def drill_candidates(*, sample: int) -> list[Backup]:
    """The newest verified backup of each live tenant (and the platform), sampled at random."""
    latest: dict[tuple, Backup] = {}
    for backup in (
        Backup.objects.filter(
            status=Backup.Status.VERIFIED, kind__in=(Backup.Kind.TENANT, Backup.Kind.PLATFORM)
        )
        .select_related("tenant")
        .order_by("-created_at")
    ):
        latest.setdefault((backup.kind, backup.tenant_id), backup)
    chosen = list(latest.values())
    random.shuffle(chosen)
    return chosen[:sample]


def drill_run(*, backup: Backup, actor: Actor) -> RestoreDrill:
    """Restore one backup into a scratch database and check it against its manifest."""
    connection.set_schema_to_public()
    drill = RestoreDrill.objects.create(backup=backup, backup_label=str(backup))
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail})

    started = time.monotonic()
    try:
        check_storage(backup)
        # One read of the object: the bytes hashed are the bytes restored.
        with pgtools.scratch_database("drill", without_public=backup.kind == Backup.Kind.PLATFORM) as scratch:
            checksum, failed = restore_hashed(
                location=backup.location, sha256=backup.sha256, size_bytes=backup.size_bytes, dbname=scratch
            )
            check(
                "sha256",
                checksum.ok,
                f"stored {checksum.sha256[:16]} ({checksum.size} B), "
                f"manifest {backup.sha256[:16]} ({backup.size_bytes} B)",
            )
            if not checksum.ok:
                mark_failed(
                    backup, "Restore drill: stored object does not match its checksum; it is corrupt.", actor
                )
            else:
                if failed is not None:
                    raise failed
                pgtools.sessions_clear(scratch)  # as every restore does
                drill.rto_seconds = time.monotonic() - started
                check("restore", True, f"pg_restore into {scratch} in {drill.rto_seconds:.2f} s")
                found = manifest_compare(manifest=backup.manifest, dbname=scratch)
        if checksum.ok:
            check(
                "row counts",
                not found.count_problems,
                "; ".join(found.count_problems[:10])
                or f"{found.rows} rows in {found.schemas} schema(s) match",
            )
            check(
                "migration state",
                found.migrations_match,
                "fingerprints match"
                if found.migrations_match
                else f"manifest {found.expected_migrations}, restored {found.found_migrations}",
            )
    except Exception as exc:
        check("restore", False, f"{type(exc).__name__}: {exc}"[:1000])
    drill.checks = checks
    drill.passed = bool(checks) and all(c["ok"] for c in checks)
    drill.reason = "" if drill.passed else "; ".join(c["detail"] for c in checks if not c["ok"])[:2000]
    drill.finished_at = timezone.now()
    drill.save()
    audit_record(
        actor=actor,
        action=Action.DRILL_PASSED if drill.passed else Action.DRILL_FAILED,
        tenant=backup.tenant,
        target=str(backup.pk),
        details={"drill": drill.pk, "rto_seconds": drill.rto_seconds, "reason": drill.reason[:500]},
    )
    return drill


def drill_sample(*, sample: int, actor: Actor) -> list[RestoreDrill]:
    return [drill_run(backup=b, actor=actor) for b in drill_candidates(sample=sample)]
