"""The owner's "API keys" page on their own shop's host: make a shop key (shown once), revoke.

Shop keys reach only this shop's domains, usage and webhook endpoints, only on its host. Thin: the
services in api.services do the work; the same owner check as the Domains page.
"""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from api.errors import ApiError
from api.models import SHOP_SCOPES, APIKey
from api.services import apikey_create, apikey_revoke
from core.audit import Actor
from core.db import connection
from tenants.domains.views import owner_required
from tenants.models import Tenant


def _actor(request: HttpRequest) -> Actor:
    return Actor.tenant_user(f"{request.user.get_username()}@{request.tenant.subdomain}")  # type: ignore[attr-defined]


@owner_required
@require_http_methods(["GET", "POST"])
def api_keys_page(request: HttpRequest) -> HttpResponse:
    route = request.tenant  # type: ignore[attr-defined]
    token = None
    if request.method == "POST":
        try:
            tenant = Tenant.objects.select_related("plan").get(pk=route.id)
            new = apikey_create(name=request.POST.get("name", ""), scopes=request.POST.getlist("scopes"),
                                tenant=tenant, actor=_actor(request))
        except ApiError as exc:
            messages.error(request, str(exc))
        else:
            token = new.token
        finally:
            connection.set_tenant(route)
    keys = APIKey.objects.filter(tenant_id=route.id).order_by("-created_at")
    response = render(request, "selfservice/api_keys.html",
                      {"shop": route, "keys": keys, "scopes": SHOP_SCOPES, "token": token})
    response["Cache-Control"] = "no-store"  # the page may carry a key shown once
    return response


@owner_required
@require_POST
def api_key_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    route = request.tenant  # type: ignore[attr-defined]
    # Scoped to this shop: another shop's key id is a 404.
    key = get_object_or_404(APIKey, pk=pk, tenant_id=route.id)
    apikey_revoke(key=key, actor=_actor(request))
    messages.success(request, f"Key {key.prefix} revoked; calls with it now answer 401.")
    return redirect("selfservice_api_keys")
