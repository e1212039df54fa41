from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client

from storefront.models import Product
from tenants import routing, services
from tenants.models import Domain
from tests.conftest import TEST_ACTOR

pytestmark = pytest.mark.django_db(transaction=True)


def add_products(tenant, *names):
    connection.set_tenant(tenant)
    try:
        for name in names:
            Product.objects.create(name=name, price=Decimal("10.00"))
    finally:
        connection.set_schema_to_public()


def shop_page(host: str):
    return Client(HTTP_HOST=host).get("/")


def test_tenant_host_shows_its_own_products(make_tenant):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    add_products(acme, "Trail runner")
    add_products(globex, "Rain jacket")
    page = shop_page("acme.localhost")
    assert page.status_code == 200
    assert b"Trail runner" in page.content and b"Rain jacket" not in page.content


def test_warm_request_makes_exactly_one_query(make_tenant, django_assert_num_queries):
    add_products(make_tenant("acme"), "Trail runner")
    shop_page("acme.localhost")  # warms the route cache
    with django_assert_num_queries(1) as captured:
        assert shop_page("acme.localhost").status_code == 200
    assert "storefront_product" in captured.captured_queries[0]["sql"]


def test_cold_request_reads_the_shared_cache_before_the_database(make_tenant, django_assert_num_queries):
    make_tenant("acme")
    shop_page("acme.localhost")
    routing._local.clear()  # as in another worker process: only the shared cache is warm
    with django_assert_num_queries(1):
        shop_page("acme.localhost")


def test_unknown_host_is_404_and_repeats_skip_the_database(db, django_assert_num_queries):
    first = shop_page("nobody.localhost")
    assert first.status_code == 404
    assert b"No shop lives at nobody.localhost" in first.content
    routing._local.clear()
    with django_assert_num_queries(0):
        assert shop_page("nobody.localhost").status_code == 404


def test_new_tenant_is_routed_even_after_its_host_was_cached_as_unknown(make_tenant):
    assert shop_page("late.localhost").status_code == 404
    make_tenant("late")
    assert shop_page("late.localhost").status_code == 200


def test_suspended_shop_gets_a_503_page_and_resumes(make_tenant):
    tenant = make_tenant("acme", name="Acme Shoes")
    assert shop_page("acme.localhost").status_code == 200  # cached as active
    services.tenant_suspend(tenant=tenant, reason="unpaid", actor=TEST_ACTOR)
    page = shop_page("acme.localhost")
    assert page.status_code == 503
    assert b"Acme Shoes is temporarily unavailable" in page.content
    assert page["Cache-Control"] == "no-store"
    services.tenant_resume(tenant=tenant, actor=TEST_ACTOR)
    assert shop_page("acme.localhost").status_code == 200


def test_domain_changes_invalidate_the_cache(make_tenant):
    tenant = make_tenant("acme")
    assert shop_page("acme.localhost").status_code == 200
    domain = Domain.objects.get(tenant=tenant)
    domain.status = Domain.Status.MOVED
    domain.save()
    routing.routes_forget(domain.domain)
    assert shop_page("acme.localhost").status_code == 404


def test_deprovisioned_shop_stops_answering(make_tenant):
    tenant = make_tenant("acme")
    assert shop_page("acme.localhost").status_code == 200
    services.tenant_deprovision(tenant=tenant, drop_schema=True, actor=TEST_ACTOR)
    assert shop_page("acme.localhost").status_code == 404


def test_unverified_custom_domain_never_routes(make_tenant):
    tenant = make_tenant("acme")
    Domain.objects.create(tenant=tenant, domain="shop.acme.test", kind=Domain.Kind.CUSTOM)
    assert shop_page("shop.acme.test").status_code in (400, 404)


def test_admin_host_serves_the_control_plane(db):
    response = Client(HTTP_HOST="localhost").get("/admin/login/")
    assert response.status_code == 200
    assert b"Django administration" in response.content or b"Log in" in response.content


def test_tenant_host_has_no_admin(make_tenant):
    make_tenant("acme")
    assert shop_page("acme.localhost").status_code == 200
    assert Client(HTTP_HOST="acme.localhost").get("/admin/").status_code == 404


def test_host_with_port_and_trailing_dot_routes(make_tenant):
    make_tenant("acme")
    assert Client(HTTP_HOST="acme.localhost.:8000").get("/").status_code == 200
