"""The two APIs: staff (control-plane host, /api/v1/) and shop (a shop's own host, /api/shop/v1/).

Both are django-ninja: the pydantic schemas validate the input and write the OpenAPI 3.1 document.
Keys are bearer tokens; each endpoint names the one scope it needs (``auth=staff("tenants:read")``).
"""

import logging
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.openapi.views import openapi_view
from ninja.security import HttpBearer

from api.errors import ScopeMissing
from api.limits import rate_limit_check
from api.models import APIKey
from api.problems import CONTENT_TYPE, platform_problem, problem, validation_problem
from api.services import apikey_authenticate
from core.audit import Action, Actor, audit_record
from core.errors import PlatformError

logger = logging.getLogger(__name__)


class _KeyAuth(HttpBearer):
    kind = APIKey.Kind.STAFF

    def __init__(self, scope: str):
        super().__init__()
        self.scope = scope

    def key_fits(self, request: HttpRequest, key: APIKey) -> bool:
        return key.kind == self.kind

    def authenticate(self, request: HttpRequest, token: str) -> APIKey | None:
        key = apikey_authenticate(token)
        if key is None or not self.key_fits(request, key):
            return None  # 401: unknown, revoked, expired, or a key of the other kind
        rate_limit_check(key)
        request.api_key = key  # type: ignore[attr-defined]
        if self.scope not in key.scopes:
            request.api_audited = True  # type: ignore[attr-defined]  # not audited again as a read
            audit_record(
                actor=Actor.api_key(key), action=Action.API_ACCESS_DENIED, tenant=key.tenant,
                target=request.path[:255], details={"method": request.method, "scope": self.scope},
            )
            raise ScopeMissing(self.scope)
        return key


class StaffKey(_KeyAuth):
    """A staff key (Authorization: Bearer plt_...), made in the admin."""


class ShopKey(_KeyAuth):
    """A shop key (Authorization: Bearer shp_...), made by the owner; only on its own shop's host."""

    kind = APIKey.Kind.SHOP

    def key_fits(self, request: HttpRequest, key: APIKey) -> bool:
        tenant = getattr(request, "tenant", None)
        return key.kind == self.kind and tenant is not None and str(key.tenant_id) == str(tenant.id)


def staff(scope: str) -> StaffKey:
    return StaffKey(scope)


def shop(scope: str) -> ShopKey:
    return ShopKey(scope)


def actor(request: HttpRequest) -> Actor:
    return Actor.api_key(request.api_key)  # type: ignore[attr-defined]


class ProblemAPI(NinjaAPI):
    """NinjaAPI whose errors are RFC 9457 problems, documented as application/problem+json."""

    def get_openapi_operation_id(self, operation: Any) -> str:
        return operation.url_name or operation.view_func.__name__

    def get_openapi_schema(self, *args: Any, **kwargs: Any) -> Any:
        schema = super().get_openapi_schema(*args, **kwargs)
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                for code, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if int(code) >= 400 and "application/json" in content:
                        response["content"] = {CONTENT_TYPE: content["application/json"]}
        return schema


def _install_handlers(api: NinjaAPI) -> None:
    @api.exception_handler(PlatformError)
    def on_platform_error(request: HttpRequest, exc: PlatformError) -> HttpResponse:
        return platform_problem(request, exc)

    @api.exception_handler(NinjaValidationError)
    def on_validation(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
        return validation_problem(request, list(exc.errors))

    @api.exception_handler(AuthenticationError)
    def on_auth(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        return problem(
            request, 401,
            "Send a valid API key as 'Authorization: Bearer <key>' (keys may be revoked or expired; "
            "shop keys work only on their own shop's host).",
            slug="unauthorized", headers={"WWW-Authenticate": 'Bearer realm="api"'},
        )

    @api.exception_handler(Http404)
    def on_404(request: HttpRequest, exc: Http404) -> HttpResponse:
        return problem(request, 404, str(exc) or "No such resource.", slug="not-found")

    @api.exception_handler(HttpError)
    def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        return problem(request, exc.status_code, str(exc))

    @api.exception_handler(Exception)
    def on_unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
        logger.exception("API error on %s %s", request.method, request.path)
        return problem(request, 500, "Something went wrong on our side; it was logged. Retry later.")


def _docs_for_staff(view: Any) -> Any:
    """The interactive docs need a staff login; the schema itself is public (it is in the repo)."""
    return staff_member_required(view) if getattr(view, "func", None) is openapi_view else view


DESCRIPTION = (
    "The platform's API for the SaaS's own systems: shops, custom domains, backups, deployments, "
    "health, webhook endpoints. Every error is an RFC 9457 problem (application/problem+json). "
    "Guide: docs/api.md."
)

staff_api = ProblemAPI(
    title="Platform control plane API",
    version="1",
    description=DESCRIPTION,
    urls_namespace="api",
    openapi_url="/schema/",
    docs_url="/docs/",
    docs_decorator=_docs_for_staff,
)
_install_handlers(staff_api)

shop_api = ProblemAPI(
    title="Platform shop API",
    version="1",
    description="One shop's custom domains, usage and webhook endpoints, with a key its owner made. "
    "Guide: docs/api.md.",
    urls_namespace="api-shop",
    openapi_url="/schema/",
    docs_url=None,
)
_install_handlers(shop_api)
