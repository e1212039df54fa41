"""Where the two APIs are mounted; platform_site's URLconfs include these lists.

The control plane's host serves the staff API (/api/v1/...), its schema (/api/schema/) and the
interactive docs (/api/docs/, staff login). A shop's host serves only the shop API
(/api/shop/v1/...); every other /api/ path there is a 404 problem.
"""

from django.http import HttpRequest, HttpResponse
from django.urls import path, re_path

from api.apis import shop_api, staff_api
from api.endpoints import backups, deployments, domains, health, tenants, webhooks
from api.problems import problem

staff_api.add_router("/v1", tenants.router)
staff_api.add_router("/v1", domains.staff_router)
staff_api.add_router("/v1", health.staff_router)
staff_api.add_router("/v1", backups.router)
staff_api.add_router("/v1", deployments.router)
staff_api.add_router("/v1", webhooks.staff_router)  # webhook endpoints, registered per API key
shop_api.add_router("/v1", domains.shop_router)
shop_api.add_router("/v1", health.shop_router)
shop_api.add_router("/v1", webhooks.shop_router)


def api_not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    return problem(request, 404, f"No API endpoint at {request.path}; see the schema at /api/schema/.",
                   slug="not-found")


control_plane_urlpatterns = [
    path("api/", staff_api.urls),
    re_path(r"^api/(?P<rest>.*)$", api_not_found, name="api_not_found"),
]

shop_urlpatterns = [
    path("api/shop/", shop_api.urls),
    re_path(r"^api/(?P<rest>.*)$", api_not_found, name="api_not_found"),
]
