"""What the backup services share: failing a row, error wording, store checks, piping into pg_restore."""

import logging
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from typing import NoReturn

from django.utils import timezone

from backups import pgtools
from backups.errors import BackupError, BackupStateError, StorageError
from backups.models import Backup, Export
from backups.storage import Store, StoreWriter, backup_storage
from core.audit import Action, Actor, audit_record
from tenants.models import Tenant

logger = logging.getLogger("backups.services")

BACKUPABLE_STATUSES = (Tenant.Status.ACTIVE, Tenant.Status.SUSPENDED)

Progress = Callable[[int, float], None]  # (bytes so far, seconds so far)


def manifest_key(backup: Backup) -> str:
    return manifest_key_for(backup.location)


def manifest_key_for(location: str) -> str:
    return location + ".manifest.json"


def error_reason(exc: BaseException) -> str:
    """An error as a person reads it: our own messages as they are, anything else with its type."""
    return str(exc) if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"


def reraise(exc: Exception, message: str) -> NoReturn:
    """Raise a BackupError as it is; wrap anything else in one that starts with ``message``."""
    if isinstance(exc, BackupError):
        raise exc
    raise BackupError(f"{message}: {error_reason(exc)}") from exc


def mark_failed(row: Backup | Export, reason: str, actor: Actor) -> None:
    """Mark a backup or an export failed with the reason, and audit it."""
    model = type(row)
    model.objects.filter(pk=row.pk).update(
        status=model.Status.FAILED, status_reason=reason[:2000], finished_at=timezone.now()
    )
    row.refresh_from_db()
    audit_record(
        actor=actor,
        action=Action.BACKUP_FAILED if model is Backup else Action.EXPORT_FAILED,
        tenant=row.tenant,
        target=str(row.pk),
        details={"reason": reason[:500]},
    )


def delete_quietly(storage: Store, key: str) -> None:
    try:
        storage.delete(key)
    except StorageError as exc:
        logger.warning("Could not delete %s after a failed backup: %s", key, exc)


def abort_upload(row: Backup | Export, storage: Store, writer: StoreWriter) -> None:
    """Abort the upload; if the store cannot be reached, leave the upload id for the reaper."""
    try:
        writer.abort()
    except StorageError as exc:
        logger.warning("Could not abort the upload of %s yet: %s", row, exc)
        return
    type(row).objects.filter(pk=row.pk).update(pending_upload_id="")


def check_storage(backup: Backup) -> None:
    configured = backup_storage().name
    if backup.storage != configured:
        raise BackupStateError(
            f"Backup {backup.pk} is stored in {backup.storage!r} but BACKUP_STORAGE is {configured!r}; "
            "point the settings at that store first."
        )


def check_verified_and_here(backup: Backup) -> None:
    if backup.status not in Backup.RESTORABLE_STATUSES:
        detail = f": {backup.status_reason}" if backup.status_reason else ""
        raise BackupStateError(
            f"Backup {backup.pk} is {backup.status}{detail}; only verified backups can be restored."
        )
    check_storage(backup)


class RestoreProcessError(BackupError):
    """pg_restore exited with an error (its stderr is in the message)."""


def pipe_into_restore(chunks: Iterable[bytes], *, dbname: str, single_transaction: bool = True) -> None:
    cmd, env = pgtools.restore_command(dbname=dbname, single_transaction=single_transaction)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
        assert proc.stdin is not None
        try:
            for chunk in chunks:
                proc.stdin.write(chunk)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.wait() != 0:
            errors.seek(0)
            raise RestoreProcessError(f"pg_restore failed: {pgtools.stderr_tail(errors.read())}")
