"""/api/v1: a shop's backups and exports (short-lived links), and restore (backups:restore only)."""

import uuid

from django.conf import settings
from django.core import signing
from django.http import FileResponse, Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import Query, Router

from api import present
from api.apis import actor, staff
from api.endpoints.tenants import tenant_for
from api.schemas import Accepted, BackupOut, ExportOut, RestoreIn, responses
from backups import jobs as backup_jobs
from backups.models import Backup, Export
from backups.selectors import backups_list
from backups.services.exports import export_create
from backups.services.restore import restore_in_place_check
from backups.services.runs import backup_create
from backups.storage import LocalStorage, backup_storage
from core.audit import Action, audit_record
from core.db import connection

router = Router(tags=["backups"])
EXPORT_SALT = "api.export-file"


def _url(name: str, **kwargs: object) -> str:
    return reverse(f"api:{name}", kwargs=kwargs, urlconf=settings.PUBLIC_SCHEMA_URLCONF)


def _uuid_or_404(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise Http404(f"{value!r} is not an id this API gave out (ids are UUIDs).") from None


@router.get("/tenants/{subdomain}/backups", response=responses({200: list[BackupOut]}),
            auth=staff("backups:read"), url_name="backup_list")
def backup_list(request: HttpRequest, subdomain: str, limit: int = Query(50, ge=1, le=200)):
    """The shop's latest backups, newest first."""
    return [present.backup_out(b) for b in backups_list(tenant=tenant_for(subdomain), limit=limit)]


@router.post("/tenants/{subdomain}/backups", response=responses({202: Accepted}),
             auth=staff("backups:write"), url_name="backup_request")
def backup_request(request: HttpRequest, subdomain: str):
    """Queue a backup of the shop now; follow `status_url`."""
    backup = backup_create(kind=Backup.Kind.TENANT, tenant=tenant_for(subdomain), actor=actor(request))
    return 202, {"status": backup.status, "status_url": _url("backup_get", backup_id=str(backup.pk))}


@router.get("/backups/{backup_id}", response=responses({200: BackupOut}), auth=staff("backups:read"),
            url_name="backup_get")
def backup_get(request: HttpRequest, backup_id: str):
    connection.set_schema_to_public()
    backup = get_object_or_404(Backup, pk=_uuid_or_404(backup_id), kind=Backup.Kind.TENANT)
    return present.backup_out(backup)


@router.post("/tenants/{subdomain}/exports", response=responses({202: Accepted}),
             auth=staff("backups:write"), url_name="export_request")
def export_request(request: HttpRequest, subdomain: str):
    """Queue an export of the shop's data (CSV files in a tar.gz); follow `status_url` for the link."""
    export = export_create(tenant=tenant_for(subdomain), actor=actor(request))
    return 202, {"status": export.status, "status_url": _url("export_get", export_id=str(export.pk))}


@router.get("/exports/{export_id}", response=responses({200: ExportOut}), auth=staff("backups:read"),
            url_name="export_get")
def export_get(request: HttpRequest, export_id: str):
    """The export's progress; once ready, a download link valid for BACKUP_DOWNLOAD_LINK_SECONDS."""
    connection.set_schema_to_public()
    export = get_object_or_404(Export, pk=_uuid_or_404(export_id))
    if export.status != Export.Status.READY:
        return present.export_out(export, None, None)
    seconds = settings.BACKUP_DOWNLOAD_LINK_SECONDS
    url = backup_storage().download_url(export.location, expires=seconds)
    if url is None:
        token = signing.TimestampSigner(salt=EXPORT_SALT).sign(str(export.pk))
        url = request.build_absolute_uri(_url("export_file", export_id=str(export.pk))) + f"?token={token}"
    audit_record(actor=actor(request), action=Action.EXPORT_LINK_ISSUED, tenant=export.tenant,
                 target=str(export.pk), details={"expires_in": seconds})
    return present.export_out(export, url, seconds)


@router.get("/exports/{export_id}/file", auth=None, url_name="export_file", response=responses({200: None}))
def export_file(request: HttpRequest, export_id: str, token: str = Query(..., max_length=300)):
    """The archive itself, for whoever holds a link from GET /exports/{id} (the token is the key)."""
    try:
        value = signing.TimestampSigner(salt=EXPORT_SALT).unsign(
            token, max_age=settings.BACKUP_DOWNLOAD_LINK_SECONDS
        )
    except signing.BadSignature:
        raise Http404("This download link is invalid or has expired; ask GET /exports/{id} for a new one.") \
            from None
    if value != export_id:
        raise Http404("This download link is for another export.")
    connection.set_schema_to_public()
    export = get_object_or_404(Export, pk=_uuid_or_404(export_id), status=Export.Status.READY)
    storage = backup_storage()
    if not isinstance(storage, LocalStorage):
        raise Http404("Exports in object storage are downloaded from their presigned link.")
    return FileResponse(open(storage._path(export.location), "rb"), as_attachment=True,  # noqa: SIM115
                        filename=f"{export.tenant_label}-export.tar.gz")


@router.post("/tenants/{subdomain}/restore", response=responses({202: Accepted}),
             auth=staff("backups:restore"), url_name="restore_request")
def restore_request(request: HttpRequest, subdomain: str, payload: RestoreIn):
    """Replace the shop's data with one of its backups (a safety backup is taken first).

    Needs the `backups:restore` scope, which no key has by default.
    """
    tenant = tenant_for(subdomain)
    backup = restore_in_place_check(
        tenant=tenant, backup_id=payload.backup_id, confirm=payload.confirm_subdomain
    )
    who = actor(request)
    backup_jobs.restore_in_place_job.delay(str(tenant.pk), str(backup.pk), tenant.subdomain, *who.job_args)
    return 202, {"status": "queued", "status_url": present.tenant_status_url(tenant)}
