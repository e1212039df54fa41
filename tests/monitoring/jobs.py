"""Jobs the tracing tests enqueue for the real worker."""

from django_tenants.utils import schema_context


def count_products(schema: str) -> int:
    from storefront.models import Product

    with schema_context(schema):
        return Product.objects.count()
