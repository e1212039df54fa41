"""The tenant owner's "Domains" page, on the shop's own host. Thin: the services do the work.

Works without JavaScript (plain forms, redirect after POST); a small script polls status.json.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from core.audit import Actor
from core.db import connection
from tenants.domains import jobs as domain_jobs
from tenants.domains import services as domain_services
from tenants.errors import TenantError
from tenants.models import Certificate, Domain, Tenant
from tenants.services import OWNER_GROUP


def owner_required(view):
    """Only this shop's owners (or its own superusers) may manage its domains."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if request.tenant is None:
            return HttpResponseForbidden("Domains are managed on the shop's own address.")
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not (user.is_superuser or user.groups.filter(name=OWNER_GROUP).exists()):
            return HttpResponseForbidden("Only the shop's owners can manage its domains.")
        return view(request, *args, **kwargs)

    return wrapped


def _actor(request) -> Actor:
    who = f"{request.user.get_username()}@{request.tenant.subdomain}"
    return Actor.tenant_user(who)


def _call(request, service, **kwargs):
    """Run a service (they work in the public schema) and come back to this shop's schema."""
    try:
        return service(**kwargs)
    finally:
        connection.set_tenant(request.tenant)


def _tenant(request) -> Tenant:
    return Tenant.objects.select_related("plan").get(pk=request.tenant.id)


def _domain(request, pk: int) -> Domain:
    # Scoped to this shop: another shop's id is a 404, never a 403 that confirms it exists.
    return get_object_or_404(
        Domain.objects.select_related("tenant"), pk=pk, tenant_id=request.tenant.id, kind=Domain.Kind.CUSTOM
    )


def _domain_view(domain: Domain) -> dict:
    cert = Certificate.objects.filter(domain=domain).first()
    return {
        "obj": domain,
        "rows": domain_services.domain_dns_records(domain),
        "problems": (domain.last_diagnosis or {}).get("problems", []),
        "certificate": cert,
        "checking": domain_jobs.check_queued(domain.pk),
    }


@owner_required
@require_GET
def domain_list(request):
    tenant = _tenant(request)
    custom = Domain.objects.filter(tenant_id=tenant.pk, kind=Domain.Kind.CUSTOM).select_related("tenant")
    platform = Domain.objects.filter(tenant_id=tenant.pk, kind=Domain.Kind.PLATFORM).first()
    return render(
        request,
        "selfservice/domains.html",
        {
            "shop": request.tenant,
            "plan": tenant.plan,
            "platform_domain": platform,
            "domains": [_domain_view(d) for d in custom],
            "used": domain_services.custom_domain_count(tenant),
        },
    )


def _act(request, service, success: Callable[[Any], str], **kwargs) -> HttpResponse:
    """Run one domain action for this shop; its refusal or its success becomes a flash message."""
    try:
        result = _call(request, service, actor=_actor(request), **kwargs)
    except TenantError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, success(result))
    return redirect("selfservice_domains")


@owner_required
@require_POST
def domain_add(request):
    return _act(
        request,
        domain_services.domain_add,
        lambda domain: f"{domain.domain} added. Create the DNS records shown, then press Check now.",
        tenant=_tenant(request),
        domain=request.POST.get("domain", ""),
    )


@owner_required
@require_POST
def domain_check(request, pk: int):
    """Queue a check (DNS and the HTTP token fetch never run in the web request); the page shows
    "checking" until the job has stored its result, and the status poll reloads it then."""
    domain = _domain(request, pk)
    try:
        domain_services.domain_check_request(domain=domain, actor=_actor(request))
    except TenantError as exc:
        messages.error(request, str(exc))
        return redirect("selfservice_domains")
    messages.success(request, f"Checking {domain.domain} now; the result appears here in a few seconds.")
    return redirect("selfservice_domains")


@owner_required
@require_POST
def domain_remove(request, pk: int):
    domain = _domain(request, pk)
    return _act(request, domain_services.domain_remove, lambda _: f"{domain.domain} removed.", domain=domain)


@owner_required
@require_POST
def domain_make_primary(request, pk: int):
    domain = _domain(request, pk)
    return _act(
        request,
        domain_services.domain_make_primary,
        lambda _: f"{domain.domain} is now your primary domain.",
        domain=domain,
    )


@owner_required
@require_GET
def domain_status(request):
    rows = []
    for domain in Domain.objects.filter(tenant_id=request.tenant.id, kind=Domain.Kind.CUSTOM):
        cert = Certificate.objects.filter(domain=domain).first()
        rows.append(
            {
                "id": domain.pk,
                "domain": domain.domain,
                "status": domain.status,
                "status_display": domain.get_status_display(),
                "reason": domain.status_reason,
                "certificate_expires": cert.not_after.isoformat() if cert and cert.not_after else None,
                "last_checked_at": domain.last_checked_at.isoformat() if domain.last_checked_at else None,
                "checking": domain_jobs.check_queued(domain.pk),
            }
        )
    return JsonResponse({"domains": rows})
