"""Models into the API's response shapes (read-only; no side effects)."""

from typing import Any

from django.conf import settings
from django.urls import reverse

from backups.models import Backup, Export
from deployments.models import Deployment, Release
from tenants.domains import jobs as domain_jobs
from tenants.domains.services import domain_dns_records
from tenants.models import Certificate, Domain, Tenant
from tenants.services import platform_host_for, tenant_url


def tenant_status_url(tenant: Tenant) -> str:
    return reverse("api:tenant_get", kwargs={"subdomain": tenant.subdomain},
                   urlconf=settings.PUBLIC_SCHEMA_URLCONF)


def tenant_out(tenant: Tenant) -> dict[str, Any]:
    host = platform_host_for(tenant.subdomain)
    return {
        "id": str(tenant.pk), "subdomain": tenant.subdomain, "name": tenant.name,
        "status": tenant.status, "status_reason": tenant.status_reason, "plan": tenant.plan.slug,
        "owner_email": tenant.owner_email, "host": host, "created_at": tenant.created_at,
        "activated_at": tenant.activated_at, "url": tenant_url(host),
    }


def domain_out(domain: Domain, certificate: Certificate | None = None) -> dict[str, Any]:
    diagnosis = domain.last_diagnosis or {}
    cert = certificate if certificate is not None else Certificate.objects.filter(domain=domain).first()
    custom = domain.kind == Domain.Kind.CUSTOM
    return {
        "id": domain.pk, "domain": domain.domain, "kind": domain.kind, "status": domain.status,
        "status_reason": domain.status_reason, "is_primary": domain.is_primary,
        "dns_records": domain_dns_records(domain) if custom else [],
        "problems": list(diagnosis.get("problems", [])),
        "ownership_verified": domain.ownership_verified_at is not None or not custom,
        "certificate": {"status": cert.status, "not_after": cert.not_after, "last_error": cert.last_error}
        if cert else None,
        "checking": domain_jobs.check_queued(domain.pk),
        "last_checked_at": domain.last_checked_at, "expires_at": domain.expires_at,
    }


def backup_out(backup: Backup) -> dict[str, Any]:
    return {
        "id": str(backup.pk), "kind": backup.kind, "purpose": backup.purpose, "status": backup.status,
        "created_at": backup.created_at, "finished_at": backup.finished_at,
        "size_bytes": backup.size_bytes or None, "sha256": backup.sha256, "error": backup.status_reason,
    }


def export_out(export: Export, download_url: str | None, expires: int | None) -> dict[str, Any]:
    return {
        "id": str(export.pk), "status": export.status, "created_at": export.created_at,
        "tables_done": export.tables_done, "tables_total": export.tables_total,
        "error": export.status_reason, "download_url": download_url,
        "download_expires_in_seconds": expires,
    }


def release_out(release: Release) -> dict[str, Any]:
    return {
        "version": release.version, "images": release.images, "git_sha": release.git_sha,
        "notes": release.notes, "backward_compatible_migrations": release.backward_compatible_migrations,
        "created_at": release.created_at,
    }


def deployment_out(deployment: Deployment) -> dict[str, Any]:
    steps = [
        {"name": s.name, "status": s.status, "started_at": s.started_at, "finished_at": s.finished_at,
         "lines": [line.text for line in s.lines.all()]}
        for s in deployment.steps.prefetch_related("lines")
    ]
    return {
        "id": deployment.pk, "environment": deployment.target.environment.name,
        "version": deployment.release.version,
        "previous_version": deployment.previous_release.version if deployment.previous_release else None,
        "strategy": deployment.strategy, "status": deployment.status, "is_rollback": deployment.is_rollback,
        "error": deployment.error, "created_at": deployment.created_at, "started_at": deployment.started_at,
        "finished_at": deployment.finished_at, "steps": steps,
        "status_url": reverse("api:deployment_get", kwargs={"deployment_id": deployment.pk},
                              urlconf=settings.PUBLIC_SCHEMA_URLCONF),
    }
