"""Staff view of custom domains: list with certificate expiry, filters, actions, audit trail."""

from datetime import timedelta

import django_rq
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from core.models import AuditEvent
from tenants.domains import services as domains
from tenants.models import Certificate, Domain
from tests.conftest import TEST_ACTOR
from tests.domains.test_verification import shop

S = Domain.Status


def staff_client() -> Client:
    get_user_model().objects.create_superuser("staff", "staff@platform.test", "a-long-unusual-passphrase")
    client = Client(HTTP_HOST="admin.platform.test")
    client.login(username="staff", password="a-long-unusual-passphrase")
    return client


@pytest.mark.django_db(transaction=True)  # jobs are enqueued on commit
def test_domain_admin_lists_filters_and_acts(plans, domain_settings):
    tenant = shop(plans, "adminshop")
    pending = domains.domain_add(tenant=tenant, domain="pending.admin.example", actor=TEST_ACTOR)
    expiring = Domain.objects.create(tenant=tenant, domain="expiring.admin.example", kind=Domain.Kind.CUSTOM,
                                     status=S.ACTIVE)
    Certificate.objects.create(domain=expiring, status=Certificate.Status.ISSUED,
                               not_after=timezone.now() + timedelta(days=10))
    healthy = Domain.objects.create(tenant=tenant, domain="healthy.admin.example", kind=Domain.Kind.CUSTOM,
                                    status=S.ACTIVE)
    Certificate.objects.create(domain=healthy, status=Certificate.Status.ISSUED,
                               not_after=timezone.now() + timedelta(days=80))
    client = staff_client()
    url = "/admin/tenants/domain/"
    listing = client.get(url).content.decode()
    assert "expiring.admin.example" in listing and "Issued" in listing
    expiring_only = client.get(url, {"health": "expiring"}).content.decode()
    assert "expiring.admin.example" in expiring_only and "healthy.admin.example" not in expiring_only
    pending_only = client.get(url, {"health": "pending"}).content.decode()
    assert "pending.admin.example" in pending_only and "expiring.admin.example" not in pending_only

    detail = client.get(f"{url}{pending.pk}/change/").content.decode()
    assert "domain.added" in detail  # the domain's own audit trail

    response = client.post(url, {"action": "reverify", "_selected_action": [pending.pk]}, follow=True)
    assert "1 domain(s) queued for verification." in response.content.decode()
    assert django_rq.get_queue("default").count == 1

    response = client.post(url, {"action": "issue_certificate", "_selected_action": [pending.pk]},
                           follow=True)
    assert ("No certificate for pending.admin.example: it is pending verification; verify it first."
            in response.content.decode())

    response = client.post(url, {"action": "disable", "_selected_action": [healthy.pk]}, follow=True)
    assert "1 domain(s) disabled." in response.content.decode()
    healthy.refresh_from_db()
    assert healthy.status == S.DISABLED
    assert AuditEvent.objects.get(action="domain.disabled").actor == "staff"

    response = client.post(url, {"action": "enable", "_selected_action": [healthy.pk]}, follow=True)
    assert "1 domain(s) enabled and queued for verification." in response.content.decode()
    healthy.refresh_from_db()
    assert healthy.status == S.PENDING_VERIFICATION and healthy.expires_at is not None
    assert AuditEvent.objects.filter(action="domain.enabled", target=healthy.domain).exists()
