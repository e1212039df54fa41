"""Continuous archive and point-in-time recovery of the control plane's cluster, with pgBackRest.

- ``config``: pgbackrest.conf generated from the PITR_* settings (repo1, and repo2 in a second region).
- ``pgbackrest``: running pgBackRest (as the data directory's owner) and reading ``info``.
- ``scratch``: a scratch cluster restored to a moment, on a private port, never the live one.
- ``services``: stanza set-up, scheduled backups, archive status, restores to a moment
  (whole database, one shop in place or as new).
- ``selectors``: the recoverable window, the archive's age (the platform RPO), facts for monitoring.
"""
