from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from core.models import AuditEvent
from storefront.models import Product
from tenants.errors import PlanLimitExceeded, TenantValidationError
from tenants.models import Domain
from tenants.services import tenant_change_plan
from tests.conftest import TEST_ACTOR

pytestmark = pytest.mark.django_db(transaction=True)


def fill_products(tenant, count):
    connection.set_tenant(tenant)
    Product.objects.bulk_create(Product(name=f"p{i}", price=Decimal(1)) for i in range(count))
    connection.set_schema_to_public()


def test_downgrade_is_refused_with_what_exceeds(make_tenant):
    tenant = make_tenant("acme", plan="growth")
    fill_products(tenant, 5)
    Domain.objects.create(tenant=tenant, domain="shop.acme.test", kind="custom", status="active")
    with pytest.raises(PlanLimitExceeded) as refused:
        tenant_change_plan(tenant=tenant, plan="starter", actor=TEST_ACTOR)
    message = str(refused.value)
    assert "'acme' cannot move to 'starter'" in message
    assert "5 products (plan allows 3)" in message
    assert "1 custom domains (plan allows 0)" in message
    tenant.refresh_from_db()
    assert tenant.plan.slug == "growth"
    assert not AuditEvent.objects.filter(action="tenant.plan_changed").exists()


def test_downgrade_that_fits_is_applied_and_audited(make_tenant):
    tenant = make_tenant("acme", plan="growth")
    fill_products(tenant, 2)
    tenant_change_plan(tenant=tenant, plan="starter", actor=TEST_ACTOR)
    tenant.refresh_from_db()
    assert tenant.plan.slug == "starter"
    event = AuditEvent.objects.get(action="tenant.plan_changed")
    assert event.details == {"from": "growth", "to": "starter"}


def test_change_plan_command_refuses_unknown_and_inactive_plans(make_tenant):
    make_tenant("acme")
    with pytest.raises(CommandError, match="Unknown plan 'gold'"):
        call_command("change_plan", "acme", "gold")
    with pytest.raises(CommandError, match="Plan 'retired' is not active"):
        call_command("change_plan", "acme", "retired")
    with pytest.raises(CommandError, match="No tenant with subdomain 'nobody'"):
        call_command("change_plan", "nobody", "starter")


def test_inactive_plan_cannot_be_used_for_new_tenants(make_tenant):
    with pytest.raises(TenantValidationError, match="not active"):
        make_tenant("acme", plan="retired")


def test_usage_refresh_copes_with_a_tenant_whose_schema_is_gone(make_tenant):
    from tenants.models import Tenant
    from tenants.usage import usage_refresh

    acme, globex = make_tenant("acme"), make_tenant("globex")
    fill_products(acme, 2)
    with connection.cursor() as cursor:
        cursor.execute('DROP SCHEMA "globex" CASCADE')
    assert usage_refresh() == 2
    assert Tenant.objects.get(pk=acme.pk).product_count == 2
    assert Tenant.objects.get(pk=globex.pk).product_count == 0
