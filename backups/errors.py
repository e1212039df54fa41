from core.errors import PlatformError


class BackupError(PlatformError):
    """A refused or failed backup operation; the message says what to fix."""


class BackupStateError(BackupError):
    pass


class BackupIntegrityError(BackupError):
    """A stored object does not match its manifest (size or sha256)."""


class StorageError(BackupError):
    """The backup store refused or could not be reached."""
