"""The storefront page without tenancy: the same view, the shop given as a constant per host.

The project's middleware (monitoring's request metrics, kept in every stack so that only tenancy
differs) labels each request with its shop, as it does for ours and stock: the stand-in carries
what a tenant row gives it (subdomain and schema name), one per host, made once.
"""

from types import SimpleNamespace

from django.urls import path

from storefront.views import product_list

_SHOPS: dict[str, SimpleNamespace] = {}


def _shop(host: str) -> SimpleNamespace:
    shop = _SHOPS.get(host)
    if shop is None:
        subdomain = host.split(":", 1)[0].split(".", 1)[0]
        shop = _SHOPS[host] = SimpleNamespace(name="Plain Shop", subdomain=subdomain, schema_name=subdomain)
    return shop


def plain_product_list(request):
    request.tenant = _shop(request.get_host())
    return product_list(request)


urlpatterns = [path("", plain_product_list, name="storefront")]
