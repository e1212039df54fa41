"""The pinned backend keeps Django's transaction handling: a failed savepoint rolls back cleanly.

Each statement travels as ``SET search_path ...; <statement>``. After an error the transaction
is aborted and refuses the SET, so savepoint and rollback statements must travel on their own,
or a caught IntegrityError in a nested atomic block (get_or_create's race handling, for one)
would break the whole outer transaction.
"""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, connection, transaction

from storefront.models import Product
from tenants.models import Plan


@pytest.mark.django_db
def test_a_caught_integrity_error_in_a_nested_block_leaves_the_outer_transaction_usable(plans):
    with transaction.atomic():
        with pytest.raises(IntegrityError), transaction.atomic():
            Plan.objects.create(name="Growth again", slug="growth")
        assert Plan.objects.filter(slug="growth").count() == 1
        Plan.objects.create(name="After", slug="after")
    assert Plan.objects.filter(slug="after").exists()


@pytest.mark.django_db(transaction=True)
def test_the_tenant_path_still_applies_after_a_savepoint_rollback(make_tenant):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    connection.set_tenant(globex)
    try:
        Product.objects.create(name="globex only", price=Decimal("1.00"))
        connection.set_tenant(acme)
        with transaction.atomic():
            Group.objects.create(name="staff")
            with pytest.raises(IntegrityError), transaction.atomic():
                Group.objects.create(name="staff")
            # get_or_create relies on the same savepoint rollback when it loses a race.
            assert Group.objects.get_or_create(name="staff")[1] is False
            assert list(Product.objects.values_list("name", flat=True)) == []
    finally:
        connection.set_schema_to_public()
