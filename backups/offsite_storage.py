"""The off-site store: a second S3-compatible bucket, in another region, for copies of every dump.

Built lazily from the BACKUP_OFFSITE_S3_* settings, like ``backups.storage.backup_storage()`` is
from BACKUP_S3_*. Keys are the same as in the primary store (under the off-site prefix), so the
off-site bucket can be promoted to primary when the first region is lost (docs/backups.md).
"""

from functools import cache

from django.conf import settings

from backups.errors import StorageError
from backups.storage import S3Storage


class OffsiteNotConfigured(StorageError):
    """No second store is configured: off-site copies and DR drills cannot run."""


class OffsiteS3Storage(S3Storage):
    """An S3Storage whose errors name the off-site settings, not the primary store's."""

    name = "offsite-s3"

    def explain(self, exc: Exception, doing: str) -> str:
        text = super().explain(exc, doing)
        return text.replace("BACKUP_S3_", "BACKUP_OFFSITE_S3_").replace("Storage ", "Off-site store ", 1)


def offsite_configured() -> bool:
    return bool(settings.BACKUP_OFFSITE_S3_BUCKET)


@cache
def _build(config: tuple) -> OffsiteS3Storage:
    return OffsiteS3Storage(**dict(config))


def offsite_storage() -> OffsiteS3Storage:
    """The second store, or OffsiteNotConfigured saying which settings to set."""
    if not offsite_configured():
        raise OffsiteNotConfigured(
            "No off-site store is configured: set BACKUP_OFFSITE_S3_BUCKET (and BACKUP_OFFSITE_S3_REGION, "
            "BACKUP_OFFSITE_S3_ENDPOINT_URL for a non-AWS store, and its credentials) to a bucket in "
            "another region (docs/backups.md, 'Off-site copies and disaster recovery')."
        )
    return _build(
        (
            ("bucket", settings.BACKUP_OFFSITE_S3_BUCKET),
            ("prefix", settings.BACKUP_OFFSITE_S3_PREFIX),
            ("endpoint_url", settings.BACKUP_OFFSITE_S3_ENDPOINT_URL),
            ("region", settings.BACKUP_OFFSITE_S3_REGION),
            ("access_key_id", settings.BACKUP_OFFSITE_S3_ACCESS_KEY_ID),
            ("secret_access_key", settings.BACKUP_OFFSITE_S3_SECRET_ACCESS_KEY),
            ("sse", settings.BACKUP_OFFSITE_S3_SSE),
            ("sse_kms_key_id", settings.BACKUP_OFFSITE_S3_SSE_KMS_KEY_ID),
            ("part_size", settings.BACKUP_S3_PART_SIZE),
            ("max_attempts", settings.BACKUP_S3_MAX_ATTEMPTS),
        )
    )
