"""Backups' services, one module per job; import from the module itself.

- ``runs``: create, run (pg_dump into the store), verify, reap; ``backup_tenant_now``.
- ``restore``: a tenant backup restored in place or as a new tenant.
- ``database``: a database or platform backup restored into a new database (restore_database).
- ``retention``: what to keep, pruning, and the erasure of a deprovisioned tenant's backups.
- ``drills``: restore drills into a scratch database.
- ``exports``: a shop's data as a tar.gz of CSV files.
- ``integrity``: the checksum check and the manifest comparison all of the above use.
- ``_common``: small pieces they share (failing a row, error wording, store checks).
"""
