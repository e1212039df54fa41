"""The two checks that say a backup can be trusted, each written once.

- ``checksum_check``: read the stored object back and compare its sha256 and size with what the
  manifest recorded (verification after upload).
- ``restore_hashed`` / ``restore_verified``: the same check on the very bytes pg_restore reads, in
  one read of the object (every restore, restore_database, drills). Reading it twice, once to
  check and once to restore, would restore bytes nobody checked if the store served others the
  second time.
- ``manifest_compare``: compare a restored database's row counts and migration state with the
  manifest (restore_database, drills).
"""

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from backups import manifest as manifest_mod
from backups import pgtools
from backups.errors import BackupIntegrityError
from backups.models import Backup
from backups.services._common import RestoreProcessError, mark_failed, pipe_into_restore
from backups.storage import Store, backup_storage
from core.audit import Actor

Chunks = Callable[[Iterator[bytes]], Iterable[bytes]]


@dataclass(frozen=True)
class Checksum:
    """What a stored object's bytes hash to, next to what its manifest says they must."""

    sha256: str
    size: int
    expected_sha256: str
    expected_size: int

    @property
    def ok(self) -> bool:
        return (self.sha256, self.size) == (self.expected_sha256, self.expected_size)

    def mismatch(self, consequence: str) -> str:
        return (
            f"Checksum mismatch: the stored object has sha256 {self.sha256[:12]}... ({self.size} bytes) "
            f"but the manifest says {self.expected_sha256[:12]}... ({self.expected_size} bytes). "
            + consequence
        )


def checksum_check(
    *, location: str, sha256: str, size_bytes: int, through: Chunks | None = None, store: Store | None = None
) -> Checksum:
    """Stream the object at ``location`` from the store (``store``, default the primary), hashing it;
    ``through`` may wrap the chunks."""
    raw = (store or backup_storage()).read_chunks(location)
    chunks: Iterable[bytes] = through(raw) if through is not None else raw
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return Checksum(digest.hexdigest(), size, sha256, size_bytes)


def checksum_require(
    *,
    location: str,
    sha256: str,
    size_bytes: int,
    backup: Backup | None,
    actor: Actor,
    consequence: str,
    through: Chunks | None = None,
) -> Checksum:
    """``checksum_check``, refusing a mismatch: ``backup`` (if any) is failed, BackupIntegrityError raised."""
    checksum = checksum_check(location=location, sha256=sha256, size_bytes=size_bytes, through=through)
    if not checksum.ok:
        reason = checksum.mismatch(consequence)
        if backup is not None:
            mark_failed(backup, reason, actor)
        raise BackupIntegrityError(reason)
    return checksum


def restore_hashed(
    *,
    location: str,
    sha256: str,
    size_bytes: int,
    dbname: str,
    single_transaction: bool = True,
    through: Chunks | None = None,
    store: Store | None = None,
) -> tuple[Checksum, RestoreProcessError | None]:
    """Stream the object at ``location`` into pg_restore (into ``dbname``) once, hashing what it reads.

    Returns the checksum of every byte of the object (what pg_restore left unread is read and
    hashed too) and pg_restore's failure, if any. The caller owns ``dbname`` and must throw it
    away unless the checksum is ok: pg_restore has already written what it read. ``store``: where
    to read (default the primary store; the DR drill reads the off-site one).
    """
    digest, size = hashlib.sha256(), 0

    def hashed(chunks: Iterable[bytes]) -> Iterator[bytes]:
        nonlocal size
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            yield chunk

    raw = (store or backup_storage()).read_chunks(location)
    chunks = hashed(through(raw) if through is not None else raw)
    failed = None
    try:
        pipe_into_restore(chunks, dbname=dbname, single_transaction=single_transaction)
    except RestoreProcessError as exc:
        failed = exc
    for _ in chunks:  # a restore that stopped early: the rest must match the manifest too
        pass
    return Checksum(digest.hexdigest(), size, sha256, size_bytes), failed


def restore_verified(
    *,
    location: str,
    sha256: str,
    size_bytes: int,
    dbname: str,
    backup: Backup | None,
    actor: Actor,
    consequence: str,
    single_transaction: bool = True,
    through: Chunks | None = None,
) -> Checksum:
    """``restore_hashed``, refusing a mismatch like ``checksum_require`` (before pg_restore's own error)."""
    checksum, failed = restore_hashed(
        location=location,
        sha256=sha256,
        size_bytes=size_bytes,
        dbname=dbname,
        single_transaction=single_transaction,
        through=through,
    )
    if not checksum.ok:
        reason = checksum.mismatch(consequence)
        if backup is not None:
            mark_failed(backup, reason, actor)
        raise BackupIntegrityError(reason)
    if failed is not None:
        raise failed
    return checksum


def without_excluded_data(tables: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Row counts as a dump holds them: tables whose data no dump carries (sessions) hold none.

    Also what a restore must find for a manifest written before those tables were left out:
    restores empty them (``pgtools.sessions_clear``).
    """
    return {
        schema: {t: 0 if t in pgtools.EXCLUDED_TABLE_DATA else rows for t, rows in counts.items()}
        for schema, counts in tables.items()
    }


@dataclass(frozen=True)
class ManifestComparison:
    """A restored database against the manifest of the backup it came from."""

    count_problems: list[str]  # one sentence per table whose rows differ (or that should not be there)
    expected_migrations: dict[str, str]  # schema -> fingerprint of its applied migrations
    found_migrations: dict[str, str]
    rows: int  # found, in all tables
    schemas: int  # named by the manifest

    @property
    def migrations_match(self) -> bool:
        return self.expected_migrations == self.found_migrations

    @property
    def problems(self) -> list[str]:
        migrations = [] if self.migrations_match else ["the applied migrations differ from the manifest's"]
        return self.count_problems + migrations


def manifest_compare(*, manifest: dict, dbname: str) -> ManifestComparison:
    """Count the rows of every table the manifest names in ``dbname`` and read its migration state."""
    expected = without_excluded_data(manifest.get("tables", {}))
    found = manifest_mod.read_contents_batched(lambda: pgtools.connect(dbname), list(expected))
    return ManifestComparison(
        count_problems=manifest_mod.compare_counts(expected, found["tables"]),
        expected_migrations={s: m["fingerprint"] for s, m in manifest.get("migrations", {}).items()},
        found_migrations={s: m["fingerprint"] for s, m in found["migrations"].items()},
        rows=sum(sum(t.values()) for t in found["tables"].values()),
        schemas=len(expected),
    )
