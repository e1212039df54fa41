from django.shortcuts import render

from storefront.models import Product


def product_list(request):
    products = list(Product.objects.all()[:200])
    return render(request, "storefront/product_list.html", {"shop": request.tenant, "products": products})
