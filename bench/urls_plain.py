"""The storefront page without tenancy: the same view, the shop's name given as a constant."""

from types import SimpleNamespace

from django.urls import path

from storefront.views import product_list

SHOP = SimpleNamespace(name="Plain Shop", subdomain="plain")


def plain_product_list(request):
    request.tenant = SHOP
    return product_list(request)


urlpatterns = [path("", plain_product_list, name="storefront")]
