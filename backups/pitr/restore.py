"""Restores to a moment from the continuous archive: the whole database (into a new database, or a
scratch cluster left running), or one shop (in place, through the same swap as a backup restore,
or as a new shop). Everything starts in a scratch cluster; the live cluster is only ever read,
and written by the final copy into a new database or through the swap."""

import subprocess
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import datetime
from typing import Any

from django_tenants.utils import quote_schema_name
from psycopg import sql

from backups import manifest as manifest_mod
from backups import pgtools
from backups.errors import BackupError, BackupIntegrityError, BackupStateError
from backups.models import PitrBackup, Restore
from backups.pitr.scratch import ScratchCluster, scratch_cluster
from backups.pitr.services import restore_moment_check, wal_archived_through
from backups.services._common import error_reason, reraise
from backups.services.database import database_restore_check
from backups.services.integrity import manifest_compare
from backups.services.restore import (
    create_as_new,
    migrations_bring_current,
    restore_as_new_subdomain_check,
    restore_in_place_tenant_check,
    restore_start,
    swap_in_place,
)
from core.audit import Action, Actor, audit_record
from core.db import connection
from tenants.models import Tenant


def _pipe(dump: tuple[list[str], dict[str, str]], restore: tuple[list[str], dict[str, str]]) -> None:
    """pg_dump | pg_restore, each with its own connection settings; raises with the failing side's words."""
    with tempfile.TemporaryFile() as dump_err, tempfile.TemporaryFile() as restore_err:
        dumper = subprocess.Popen(dump[0], env=dump[1], stdout=subprocess.PIPE, stderr=dump_err)
        loader = subprocess.Popen(
            restore[0], env=restore[1], stdin=dumper.stdout, stdout=subprocess.DEVNULL, stderr=restore_err
        )
        assert dumper.stdout is not None  # stdout=PIPE
        dumper.stdout.close()
        restore_rc, dump_rc = loader.wait(), dumper.wait()
        for rc, err, what in (
            (dump_rc, dump_err, "pg_dump of the scratch cluster"),
            (restore_rc, restore_err, "pg_restore"),
        ):
            if rc != 0:
                err.seek(0)
                raise BackupError(f"{what} failed: {pgtools.stderr_tail(err.read())}")


def _dump_from(cluster: ScratchCluster, *, schema: str | None) -> tuple[list[str], dict[str, str]]:
    cmd = [pgtools.pg_binary("pg_dump"), "--format=custom", "--no-password"]
    cmd += [f"--exclude-table-data=*.{t}" for t in pgtools.EXCLUDED_TABLE_DATA]
    if schema:
        cmd.append(f"--schema={schema}")
    return cmd, pgtools.pg_env(cluster.params())


def _backup_label(label: str) -> PitrBackup:
    found = PitrBackup.objects.filter(label=label, status=PitrBackup.Status.SUCCEEDED).first()
    if found is None:
        raise BackupError(
            f"No succeeded pgBackRest backup is labelled {label!r}; see the cluster backups list."
        )
    return found


def _moment_ready(to_time: datetime) -> None:
    restore_moment_check(to_time=to_time)
    wal_archived_through(to_time)


def database_restore_to_time(
    *,
    to_time: datetime | None = None,
    backup_label: str | None = None,
    target: str | None,
    keep_cluster: bool = False,
    actor: Actor,
) -> dict[str, Any]:
    """The whole database as it was at ``to_time`` (or at the end of one backup), restored into a
    scratch cluster and then copied into the new database ``target`` on our server, checked table by
    table against the scratch cluster; or, with ``keep_cluster``, the scratch cluster left running."""
    if (to_time is None) == (backup_label is None):
        raise BackupError("Name the moment with --to-time or the backup with --to-backup, not both.")
    if target is None and not keep_cluster:
        raise BackupError(
            "Give --target-database NAME, or --keep-cluster to leave the scratch cluster running."
        )
    if target is not None:
        database_restore_check(target=target)
    if to_time is not None:
        _moment_ready(to_time)
    else:
        assert backup_label is not None
        _backup_label(backup_label)
    source = to_time.isoformat() if to_time else f"backup {backup_label}"
    started = time.monotonic()
    live = pgtools.database_params()["dbname"]
    work = f"{(target or 'pitr')[:40]}_restoring_{uuid.uuid4().hex[:10]}"
    summary: dict[str, Any] = {"to": source, "target": target}
    try:
        with scratch_cluster(to_time=to_time, backup_label=backup_label, keep=keep_cluster) as cluster:
            summary["recovered_to"] = cluster.recovered_to
            with cluster.connect() as conn:
                contents = manifest_mod.read_contents(conn, None)
            _check_migrations(contents)
            summary.update(
                schemas=len(contents["tables"]),
                tables=sum(len(t) for t in contents["tables"].values()),
                rows=sum(sum(t.values()) for t in contents["tables"].values()),
            )
            if keep_cluster:
                summary.update(port=cluster.port, data=str(cluster.data), database=live)
            if target is not None:
                pgtools.database_create(work)
                _pipe(
                    _dump_from(cluster, schema=None),
                    pgtools.restore_command(dbname=work, single_transaction=False),
                )
                problems = manifest_compare(manifest=contents, dbname=work).problems
                if problems:
                    raise BackupIntegrityError(
                        "The copy does not match the scratch cluster: " + "; ".join(problems[:10])
                    )
                # No sessions came over (the dump leaves them out); void set-password links too.
                summary["set_password_links_invalidated"] = pgtools.set_password_links_void(work)
                with pgtools.connect(autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(target))
                    )  # database_restore_check allowed only an empty one
                    conn.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                            sql.Identifier(work), sql.Identifier(target)
                        )
                    )
    except Exception as exc:
        pgtools.database_drop(work)
        _audit(
            actor, Action.DATABASE_PITR_RESTORE_FAILED, source, {**summary, "reason": error_reason(exc)[:500]}
        )
        reraise(exc, f"Restore to {source} failed and nothing was left behind")
    summary["seconds"] = round(time.monotonic() - started, 2)
    _audit(actor, Action.DATABASE_PITR_RESTORED, source, summary)
    return summary


def _check_migrations(contents: dict[str, Any]) -> None:
    from tenants.migration_state import expected_migration_keys

    known = set(expected_migration_keys())
    for schema, state in contents["migrations"].items():
        unknown = sorted(set(state["applied"]) - known)
        if unknown and not schema.startswith("_"):
            raise BackupStateError(
                f"Schema {schema!r} at that moment has migrations this release does not know "
                f"({', '.join(unknown[:5])}); restore with that release deployed."
            )


def _audit(actor: Actor, action: Action, source: str, details: dict[str, Any]) -> None:
    connection.set_schema_to_public()
    audit_record(actor=actor, action=action, target=source, details=details)


def _copy_schema_from(cluster: ScratchCluster, schema: str, target_schema: str) -> None:
    """The shop's schema out of the scratch cluster, under ``target_schema``, into our database."""
    with cluster.connect(autocommit=True) as conn:
        found = conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", [quote_schema_name(schema)]).fetchone()
        if not (found and found[0]):
            raise BackupStateError(f"Schema {schema!r} did not exist at that moment; nothing was restored.")
        if schema != target_schema:
            conn.execute(
                f"ALTER SCHEMA {quote_schema_name(schema)} RENAME TO {quote_schema_name(target_schema)}"
            )
        applied = {
            f"{a}.{n}"
            for a, n in conn.execute(
                sql.SQL("SELECT app, name FROM {}.django_migrations").format(sql.Identifier(target_schema))
            ).fetchall()
        }
    _pipe(
        _dump_from(cluster, schema=target_schema),
        pgtools.restore_command(dbname=pgtools.database_params()["dbname"]),
    )
    migrations_bring_current(applied, target_schema, source=f"Schema {schema!r} at that moment")


def tenant_restore_to_time(*, tenant: Tenant, to_time: datetime, confirm: str, actor: Actor) -> Restore:
    """One shop's data as it was at ``to_time``, swapped in place (safety backup first) by the same
    atomic path a backup restore takes; the other shops are not touched."""
    restore_in_place_tenant_check(tenant=tenant, confirm=confirm)
    _moment_ready(to_time)
    with ExitStack() as stack:
        cluster = _scratch_for(stack, tenant, to_time, Restore.Mode.IN_PLACE, actor)
        restore = restore_start(
            tenant=tenant, backup=None, mode=Restore.Mode.IN_PLACE, actor=actor, to_time=to_time
        )
        return swap_in_place(
            tenant=tenant,
            restore=restore,
            actor=actor,
            copy_in=lambda side: _copy_schema_from(cluster, tenant.schema_name, side),
        )


def _scratch_for(
    stack: ExitStack, tenant: Tenant, to_time: datetime, mode: str, actor: Actor
) -> ScratchCluster:
    """The scratch cluster for a shop's restore; its failure (nothing changed yet) is audited."""
    try:
        return stack.enter_context(scratch_cluster(to_time=to_time))
    except Exception as exc:
        audit_record(
            actor=actor,
            action=Action.BACKUP_RESTORE_FAILED,
            tenant=tenant,
            target=f"to {to_time.isoformat()}",
            details={"mode": mode, "reason": error_reason(exc)[:500]},
        )
        reraise(exc, "The scratch cluster could not be restored; the shop is unchanged")


def tenant_restore_to_time_as_new(
    *, tenant: Tenant, to_time: datetime, subdomain: str, actor: Actor, name: str = ""
) -> Restore:
    """One shop as it was at ``to_time``, as a new shop (its own schema, domain, active at once)."""
    subdomain = restore_as_new_subdomain_check(subdomain=subdomain)
    _moment_ready(to_time)
    with ExitStack() as stack:
        cluster = _scratch_for(stack, tenant, to_time, Restore.Mode.AS_NEW, actor)
        return create_as_new(
            source=tenant,
            subdomain=subdomain,
            name=name,
            actor=actor,
            to_time=to_time,
            copy_in=lambda schema: _copy_schema_from(cluster, tenant.schema_name, schema),
        )
