from decimal import Decimal

import pytest
from django.db import connection

from core.models import AuditEvent
from storefront.models import Product
from storefront.services import product_create
from tenants.errors import PlanLimitExceeded, TenantStateError
from tests.conftest import TEST_ACTOR

pytestmark = pytest.mark.django_db(transaction=True)


def test_product_limit_of_the_plan_is_enforced(make_tenant):
    tenant = make_tenant("acme", plan="starter")  # 3 products
    connection.set_tenant(tenant)
    try:
        for i in range(3):
            product_create(tenant=tenant, name=f"p{i}", price=Decimal("9.99"), actor=TEST_ACTOR)
        with pytest.raises(PlanLimitExceeded, match="'acme' has 3 products, the most its plan 'starter'"):
            product_create(tenant=tenant, name="one too many", price=Decimal(1), actor=TEST_ACTOR)
        assert Product.objects.count() == 3
    finally:
        connection.set_schema_to_public()
    assert AuditEvent.objects.filter(action="product.created", tenant=tenant).count() == 3


def test_products_cannot_be_written_into_another_tenants_schema(make_tenant):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    connection.set_tenant(globex)
    try:
        with pytest.raises(TenantStateError, match="Refusing to write products for 'acme'"):
            product_create(tenant=acme, name="stray", price=Decimal(1), actor=TEST_ACTOR)
        assert Product.objects.count() == 0
    finally:
        connection.set_schema_to_public()
