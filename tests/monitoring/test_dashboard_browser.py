import pytest
from django.contrib.auth.models import User

from tests.monitoring.conftest import ARTIFACTS
from tests.monitoring.dashboard_data import seed_dashboard


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_dashboard_renders_in_chromium(live_server, page, make_tenant, live_worker, unwired_facts):
    # Probe-driven incidents only: with the backups source wired, never-backed-up shops add more.
    seed_dashboard(make_tenant)
    User.objects.create_superuser("ops", "ops@example.test", "correct horse battery")
    base = live_server.url.replace("127.0.0.1", "localhost")  # the admin answers on "localhost" only
    page.goto(f"{base}/admin/login/?next=/admin/monitoring/statusdashboard/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "correct horse battery")
    page.click("input[type=submit]")
    page.wait_for_selector("#mon-shops")
    assert page.title().startswith("Status dashboard")
    assert page.locator("#mon-incidents .mon-big").inner_text() == "2"  # initech down, acme cert
    assert page.locator("#mon-workers").inner_text().count("default, long") == 1
    rows = page.locator("#mon-shops tbody tr")
    assert rows.count() == 3
    assert rows.first.inner_text().startswith("initech.localhost")
    strip = rows.first.locator("svg.mon-strip").first.bounding_box()
    assert strip and strip["width"] == 240  # 24 hourly cells, drawn
    assert page.locator("#mon-tenants svg rect").count() == 2  # active, suspended
    # Backup sizes: a tenant and a platform segment per day for (at least) 29 of the 30 days.
    sizes = page.locator("#mon-backup-sizes svg.mon-columns")
    assert sizes.locator("rect").count() >= 2 * 29 + 2  # + two legend keys
    box = sizes.bounding_box() or {}
    assert box.get("width", 0) > 250 and box.get("height", 0) > 80  # drawn, scaled into its card
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "monitoring-dashboard.png"), full_page=True)
