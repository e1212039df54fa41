"""The disaster-recovery drill: the platform database and one shop restored from the second store alone.

It assumes the first region is lost: the primary store and the live database are not read. What
to restore is found in the off-site store (the newest platform dump by its key, its manifest
beside it); the shop is chosen from the *restored* platform database (an active tenant with a dump
in the off-site store), as an operator rebuilding the platform would. Both dumps are hashed on
their way into pg_restore (one read each) and checked against their manifests; the shop's tenant
row and domain must be in the restored platform. The measured RTO is the time from the start to
both being restored and checked. Everything goes into a scratch database, dropped afterwards.
"""

import json
import random
import time
from typing import Any

from django.utils import timezone
from psycopg import sql as psycopg_sql

from backups import pgtools
from backups.errors import StorageError
from backups.models import DisasterRecoveryDrill
from backups.offsite_storage import OffsiteS3Storage, offsite_configured, offsite_storage
from backups.services._common import manifest_key_for
from backups.services.integrity import manifest_compare, restore_hashed
from core.audit import Action, Actor, audit_record
from core.db import connection
from tenants.models import Domain, Tenant


class DrillStep(Exception):
    """A check failed and the drill cannot go on (it is recorded; the drill fails)."""


def _newest_dump(store: OffsiteS3Storage, prefix: str) -> str | None:
    # Keys start with the dump's UTC time (<kind>/<YYYYmmddTHHMMSSZ>-<id>.dump): the last sorts newest.
    try:
        keys = store.list_keys(prefix)
    except Exception as exc:  # botocore's own errors: worded like every other store error
        raise DrillStep(store.explain(exc, f"list {prefix}")) from None
    dumps = [k for k in keys if k.endswith(".dump")]
    return max(dumps) if dumps else None


def _manifest(store: OffsiteS3Storage, key: str) -> dict[str, Any]:
    try:
        manifest = json.loads(store.get_bytes(manifest_key_for(key)))
    except StorageError as exc:
        raise DrillStep(f"no manifest beside {key} in the off-site store ({exc})") from None
    except ValueError:
        raise DrillStep(f"the manifest of {key} is not valid JSON: it is damaged") from None
    if not {"sha256", "size_bytes", "tables"} <= set(manifest):
        raise DrillStep(f"the manifest of {key} lacks sha256, size_bytes or tables: it is damaged")
    return manifest


def _shops_in(scratch: str, subdomain: str | None) -> list[tuple[str, str, str, int]]:
    """(id, subdomain, schema, domains) of the active shops in the restored platform database."""
    query = psycopg_sql.SQL(
        "SELECT t.id::text, t.subdomain, t.schema_name, count(d.id) FROM public.{} t "
        "LEFT JOIN public.{} d ON d.tenant_id = t.id WHERE t.status = 'active' {} "
        "GROUP BY t.id, t.subdomain, t.schema_name ORDER BY t.subdomain"
    ).format(
        psycopg_sql.Identifier(Tenant._meta.db_table),
        psycopg_sql.Identifier(Domain._meta.db_table),
        psycopg_sql.SQL("AND t.subdomain = %s") if subdomain else psycopg_sql.SQL(""),
    )
    with pgtools.connect(scratch) as conn:
        return [tuple(r) for r in conn.execute(query, [subdomain] if subdomain else []).fetchall()]


class _Drill:
    """Collects the checks of one drill run."""

    def __init__(self, drill: DisasterRecoveryDrill, started: float) -> None:
        self.drill, self.started = drill, started
        self.checks: list[dict[str, Any]] = []

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(
            {
                "check": name,
                "ok": ok,
                "detail": detail[:1000],
                "seconds": round(time.monotonic() - self.started, 2),
            }
        )
        if not ok:
            raise DrillStep(f"{name}: {detail}")

    def restore(self, what: str, store: OffsiteS3Storage, key: str, manifest: dict, scratch: str) -> None:
        step = time.monotonic()
        checksum, failed = restore_hashed(
            location=key,
            sha256=manifest["sha256"],
            size_bytes=int(manifest["size_bytes"]),
            dbname=scratch,
            store=store,
        )
        self.check(
            f"{what} sha256",
            checksum.ok,
            f"off-site {checksum.sha256[:16]} ({checksum.size} B), manifest {checksum.expected_sha256[:16]} "
            f"({checksum.expected_size} B)",
        )
        self.check(
            f"{what} restore",
            failed is None,
            str(failed) if failed else f"{key} restored in {time.monotonic() - step:.2f} s",
        )
        pgtools.sessions_clear(scratch)
        found = manifest_compare(manifest=manifest, dbname=scratch)
        self.check(
            f"{what} row counts",
            not found.count_problems,
            "; ".join(found.count_problems[:10]) or f"{found.rows} rows in {found.schemas} schema(s) match",
        )
        self.check(
            f"{what} migration state",
            found.migrations_match,
            "fingerprints match"
            if found.migrations_match
            else f"manifest {found.expected_migrations}, restored {found.found_migrations}",
        )


def dr_drill_run(*, actor: Actor, trigger: str, subdomain: str | None = None) -> DisasterRecoveryDrill:
    """Restore the newest platform dump and one shop's newest dump from the second store, and check them.

    Raises OffsiteNotConfigured (before recording anything) when there is no second store; every
    other problem is recorded on the drill, which then fails.
    """
    store = offsite_storage()
    connection.set_schema_to_public()
    drill = DisasterRecoveryDrill.objects.create(
        trigger=trigger, requested_by=f"{actor.type}:{actor.name}"[:200], store=store.describe()
    )
    run = _Drill(drill, time.monotonic())
    try:
        platform_key = _newest_dump(store, "platform/")
        if platform_key is None:
            raise DrillStep(
                "no platform dump in the off-site store: run backup_platform and let it be copied first"
            )
        drill.platform_key = platform_key
        platform_manifest = _manifest(store, platform_key)
        with pgtools.scratch_database("dr", without_public=True) as scratch:
            run.restore("platform", store, platform_key, platform_manifest, scratch)
            shops = _shops_in(scratch, subdomain)
            if not shops:
                raise DrillStep(
                    f"shop {subdomain!r} is not an active tenant in the restored platform database"
                    if subdomain
                    else "the restored platform database has no active shop"
                )
            random.shuffle(shops)
            chosen = next(
                ((s, k) for s in shops if (k := _newest_dump(store, f"tenants/{s[0]}/")) is not None), None
            )
            if chosen is None:
                names = ", ".join(s[1] for s in shops[:5])
                raise DrillStep(
                    f"no shop of the restored platform has a dump in the off-site store ({names})"
                )
            (tenant_id, label, schema, domains), shop_key = chosen
            drill.tenant_label, drill.shop_key = label, shop_key
            shop_manifest = _manifest(store, shop_key)
            run.check(
                "shop routes",
                domains > 0 and shop_manifest.get("schema") == schema,
                f"tenant {label} in the restored platform: schema {schema}, {domains} domain(s); "
                f"the dump holds schema {shop_manifest.get('schema')}",
            )
            run.restore("shop", store, shop_key, shop_manifest, scratch)
            drill.rto_seconds = time.monotonic() - run.started
    except DrillStep as exc:
        drill.reason = str(exc)
    except Exception as exc:  # a drill records what broke, whatever it was
        drill.reason = f"{type(exc).__name__}: {exc}"
        run.checks.append({"check": "drill", "ok": False, "detail": drill.reason[:1000]})
    drill.checks = run.checks
    drill.passed = not drill.reason and bool(run.checks) and all(c["ok"] for c in run.checks)
    drill.finished_at = timezone.now()
    drill.reason = drill.reason[:2000]
    drill.save()
    audit_record(
        actor=actor,
        action=Action.DR_DRILL_PASSED if drill.passed else Action.DR_DRILL_FAILED,
        target=str(drill.pk),
        details={
            "store": drill.store,
            "platform": drill.platform_key,
            "shop": drill.tenant_label,
            "rto_seconds": drill.rto_seconds and round(drill.rto_seconds, 2),
            "reason": drill.reason[:500],
        },
    )
    return drill


def dr_drill_if_configured(
    *, actor: Actor, trigger: str, subdomain: str | None = None
) -> DisasterRecoveryDrill | None:
    """The scheduled drill: nothing to do (None) when no second store is configured."""
    if not offsite_configured():
        return None
    return dr_drill_run(actor=actor, trigger=trigger, subdomain=subdomain)
