"""The backup store: S3 (any S3-compatible service, via boto3) or a local folder.

One small module so there is exactly one place to configure it. Writers stream: S3 writes go
through a multipart upload holding at most one part in memory; local writes go to a ``.partial``
file renamed into place on commit. ``abort()`` leaves no object behind in either.
"""

import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from django.conf import settings

from backups.errors import StorageError

CHUNK = 1024 * 1024


class LocalWriter:
    def __init__(self, path: Path):
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.partial, "wb")  # closed in commit/abort
        # Recorded on the backup row like an S3 upload id, so the reaper deletes the partial file
        # of a worker that was killed mid-backup.
        self.upload_id = "partial-file"

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        try:
            os.replace(self.partial, self.path)
        except FileNotFoundError:
            # The reaper removed it: it declared this run dead (no heartbeat for too long).
            raise StorageError(
                f"{self.partial.name} was removed before it was complete: the backup was declared dead "
                "while it ran; nothing was stored."
            ) from None

    def abort(self) -> None:
        self.file.close()
        self.partial.unlink(missing_ok=True)


class LocalStorage:
    name = "local"

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def describe(self) -> str:
        return f"local folder {self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError(f"Object key {key!r} points outside the backup folder.")
        return path

    def writer(self, key: str) -> LocalWriter:
        return LocalWriter(self._path(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        w = self.writer(key)
        w.write(data)
        w.commit()

    def read_chunks(self, key: str) -> Iterator[bytes]:
        try:
            f = open(self._path(key), "rb")
        except FileNotFoundError:
            raise StorageError(f"Object {key!r} is missing from {self.describe()}.") from None
        with f:
            while chunk := f.read(CHUNK):
                yield chunk

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.read_chunks(key))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self.root
        return sorted(
            str(p.relative_to(base))
            for p in base.rglob("*")
            if p.is_file() and str(p.relative_to(base)).startswith(prefix)
        )

    def abort_pending(self, key: str, upload_id: str) -> None:
        self._path(key).with_name(self._path(key).name + ".partial").unlink(missing_ok=True)

    def download_url(self, key: str, expires: int) -> str | None:
        return None


class S3Writer:
    """A multipart upload fed by write(); holds at most one part in memory."""

    def __init__(self, storage: "S3Storage", key: str):
        self.s3, self.bucket, self.key = storage.client, storage.bucket, storage.full_key(key)
        self.part_size = storage.part_size
        self.buffer = bytearray()
        self.parts: list[dict] = []
        try:
            self.upload_id = self.s3.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, **storage.sse_args()
            )["UploadId"]
        except Exception as exc:
            raise StorageError(storage.explain(exc, "start an upload")) from exc
        self.storage = storage

    def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= self.part_size:
            # One copy of the part (slicing a bytearray, then bytes(), would make two).
            with memoryview(self.buffer) as view:
                part = view[: self.part_size].tobytes()
            del self.buffer[: self.part_size]
            self._send(part)

    def _send(self, body: bytes) -> None:
        number = len(self.parts) + 1
        try:
            etag = self.s3.upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
            )["ETag"]
        except Exception as exc:
            raise StorageError(self.storage.explain(exc, f"upload part {number}")) from exc
        self.parts.append({"PartNumber": number, "ETag": etag})

    def commit(self) -> None:
        if self.buffer or not self.parts:
            self._send(bytes(self.buffer))
            self.buffer.clear()
        try:
            self.s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
            )
        except Exception as exc:
            raise StorageError(self.storage.explain(exc, "complete the upload")) from exc

    def abort(self) -> None:
        self.buffer.clear()
        self.storage.abort_pending(self.key, self.upload_id, full=True)


class S3Storage:
    name = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str,
        endpoint_url: str,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        sse: str,
        sse_kms_key_id: str,
        part_size: int,
        max_attempts: int,
    ):
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.sse, self.sse_kms_key_id = sse, sse_kms_key_id
        self.part_size = part_size
        self.endpoint_url = endpoint_url
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            config=Config(
                retries={"max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                # MinIO and other self-hosted stores want path-style URLs; AWS picks its own.
                s3={"addressing_style": "path" if endpoint_url else "auto"},
                signature_version="s3v4",
            ),
        )

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def explain(self, exc: Exception, doing: str) -> str:
        from botocore.exceptions import ClientError, EndpointConnectionError

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                return f"Bucket {self.bucket!r} does not exist; create it or fix BACKUP_S3_BUCKET."
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return f"Storage refused to {doing} ({code}); check BACKUP_S3_* credentials."
            return f"Storage refused to {doing}: {code} {exc}"
        if isinstance(exc, EndpointConnectionError) or "Connect" in type(exc).__name__:
            return f"Storage unreachable: could not {doing} at {self.describe()} ({type(exc).__name__})."
        return f"Storage failed to {doing}: {type(exc).__name__}: {exc}"

    def full_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def sse_args(self) -> dict:
        args = {}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
            if self.sse_kms_key_id:
                args["SSEKMSKeyId"] = self.sse_kms_key_id
        return args

    def writer(self, key: str) -> S3Writer:
        return S3Writer(self, key)

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.full_key(key), Body=data, **self.sse_args())
        except Exception as exc:
            raise StorageError(self.explain(exc, f"write {key}")) from exc

    def read_chunks(self, key: str) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.full_key(key))["Body"]
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise StorageError(f"Object {key!r} is missing from {self.describe()}.") from exc
            raise StorageError(self.explain(exc, f"read {key}")) from exc
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.read_chunks(key))

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.full_key(key))
            return True
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageError(self.explain(exc, f"look up {key}")) from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.full_key(key))
        except Exception as exc:
            raise StorageError(self.explain(exc, f"delete {key}")) from exc

    def list_keys(self, prefix: str = "") -> list[str]:
        keys, strip = [], len(self.full_key(""))
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.full_key(prefix)
        )
        for page in pages:
            keys += [obj["Key"][strip:] for obj in page.get("Contents", [])]
        return sorted(keys)

    def abort_pending(self, key: str, upload_id: str, full: bool = False) -> None:
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=key if full else self.full_key(key), UploadId=upload_id
            )
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code == "NoSuchUpload":
                return
            raise StorageError(self.explain(exc, "abort the unfinished upload")) from exc

    def download_url(self, key: str, expires: int) -> str | None:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.full_key(key)}, ExpiresIn=expires
        )


Store = LocalStorage | S3Storage
StoreWriter = LocalWriter | S3Writer


@cache
def _build(config: tuple) -> Store:
    kind, *rest = config
    if kind == "s3":
        return S3Storage(**dict(rest))
    return LocalStorage(rest[0])


def backup_storage() -> Store:
    """The configured store, built lazily (and rebuilt when the settings change, as in tests)."""
    if settings.BACKUP_STORAGE == "s3":
        if not settings.BACKUP_S3_BUCKET:
            raise StorageError("BACKUP_STORAGE is 's3' but BACKUP_S3_BUCKET is empty; set the bucket.")
        return _build(
            (
                "s3",
                ("bucket", settings.BACKUP_S3_BUCKET),
                ("prefix", settings.BACKUP_S3_PREFIX),
                ("endpoint_url", settings.BACKUP_S3_ENDPOINT_URL),
                ("region", settings.BACKUP_S3_REGION),
                ("access_key_id", settings.BACKUP_S3_ACCESS_KEY_ID),
                ("secret_access_key", settings.BACKUP_S3_SECRET_ACCESS_KEY),
                ("sse", settings.BACKUP_S3_SSE),
                ("sse_kms_key_id", settings.BACKUP_S3_SSE_KMS_KEY_ID),
                ("part_size", settings.BACKUP_S3_PART_SIZE),
                ("max_attempts", settings.BACKUP_S3_MAX_ATTEMPTS),
            )
        )
    if settings.BACKUP_STORAGE != "local":
        raise StorageError(f"BACKUP_STORAGE is {settings.BACKUP_STORAGE!r}; use 'local' or 's3'.")
    return _build(("local", str(settings.BACKUP_LOCAL_DIR)))
