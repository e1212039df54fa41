"""The fewer-round-trips provisioning path keeps its edge cases: a host row that is already there."""

import pytest
from django.contrib.auth.models import Group
from django.db import connection

from tenants import services
from tenants.models import Domain, Tenant
from tests.conftest import TEST_ACTOR

pytestmark = pytest.mark.django_db(transaction=True)


def test_provision_takes_over_a_platform_host_row_that_already_exists(plans):
    tenant = services.tenant_request(
        subdomain="taken-over", name="Taken Over", plan="growth", owner_email="o@taken.test",
        actor=TEST_ACTOR,
    )
    # E.g. added by hand in the admin between request and provisioning: the insert clashes,
    # and provisioning must adopt the row rather than fail.
    Domain.objects.create(
        domain="taken-over.localhost", tenant=tenant, kind=Domain.Kind.CUSTOM,
        status=Domain.Status.PENDING_VERIFICATION, is_primary=False,
    )

    result = services.tenant_provision_run(tenant_id=tenant.pk, actor=TEST_ACTOR)

    assert result.tenant.status == Tenant.Status.ACTIVE
    domains = list(Domain.objects.filter(tenant=tenant).values_list("domain", "kind", "status", "is_primary"))
    assert domains == [("taken-over.localhost", "platform", "active", True)]
    connection.set_tenant(result.tenant)
    try:
        owners = Group.objects.get(name=services.OWNER_GROUP).user_set.values_list("username", flat=True)
        assert list(owners) == ["o@taken.test"]
    finally:
        connection.set_schema_to_public()


def test_provision_audit_names_the_plan(plans):
    tenant = services.tenant_provision(
        subdomain="planned", name="Planned", plan="starter", owner_email="o@planned.test",
        actor=TEST_ACTOR,
    ).tenant
    event = tenant.audit_events.get(action="tenant.provisioned")
    assert event.details["plan"] == "starter"
    assert event.details["host"] == "planned.localhost"
