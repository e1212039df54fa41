from decimal import Decimal

from django.db import transaction

from core.audit import Action, Actor, audit_record
from core.db import connection
from storefront.models import Product
from tenants.errors import PlanLimitExceeded, TenantStateError
from tenants.models import Tenant


def product_create(*, tenant: Tenant, name: str, price: Decimal, actor: Actor) -> Product:
    """Add a product to ``tenant``'s shop, within its plan's product limit."""
    if connection.schema_name != tenant.schema_name:
        raise TenantStateError(
            f"Refusing to write products for {tenant.subdomain!r} while connected to schema "
            f"{connection.schema_name!r}; activate the tenant first."
        )
    with transaction.atomic():
        # Serialise concurrent creates in this shop so two cannot both pass the limit check.
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE storefront_product IN SHARE ROW EXCLUSIVE MODE")
        count = Product.objects.count()
        if count >= tenant.plan.max_products:
            raise PlanLimitExceeded(
                f"{tenant.subdomain!r} has {count} products, the most its plan "
                f"{tenant.plan.slug!r} allows; upgrade the plan to add more."
            )
        product = Product.objects.create(name=name, price=price)
    audit_record(actor=actor, action=Action.PRODUCT_CREATED, tenant=tenant, target=name,
                 details={"price": str(price)})
    return product
