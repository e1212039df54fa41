from tenants.errors import TenantError


class BackupError(TenantError):
    """A refused or failed backup operation; the message says what to fix.

    A TenantError, so the tenant commands' base turns it into a one-line message and exit 1.
    """


class BackupStateError(BackupError):
    pass


class BackupIntegrityError(BackupError):
    """A stored object does not match its manifest (size or sha256)."""


class StorageError(BackupError):
    """The backup store refused or could not be reached."""
