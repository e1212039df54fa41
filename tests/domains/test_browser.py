"""The Domains page in Debian's Chromium (Playwright): add a domain, read the DNS table, check it,
watch it become active. Leaves a screenshot in test-artifacts/."""

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.conftest import BASE_DIR
from tests.domains.conftest import set_owner_password

# pytest-playwright's session-wide sync API keeps an event loop in this thread (it starts before
# the database fixtures); the ORM calls here are plain sync ones. Same as tests/browser/conftest.py.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def test_owner_takes_a_domain_live_in_chromium(make_tenant, platform_stack, browser_type):
    # pytest-playwright's session-wide Playwright (browser_type); our own launch so Chromium is
    # Debian's and resolves the test names to loopback. A missing Chromium fails the test.
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run scripts/setup (Debian package chromium)"
    stack = platform_stack
    acme = make_tenant("acme", name="Acme Shoes")
    password = set_owner_password(acme)
    artifacts = BASE_DIR / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    base = f"http://acme.platform.test:{stack.http_port}"

    browser = browser_type.launch(
        executable_path=CHROMIUM,
        args=[*CHROMIUM_ARGS,
              "--host-resolver-rules=MAP *.platform.test 127.0.0.1, MAP shop.example.test 127.0.0.1"],
    )
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(f"{base}/account/login/?next=/account/domains/")
        page.fill("input[name=username]", acme.owner_email)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_have_text("Domains for Acme Shoes")

        page.fill("#id_domain", "shop.example.test")
        page.get_by_role("button", name="Add domain").click()
        expect(page.locator(".messages")).to_contain_text("shop.example.test added")
        section = page.locator("section[data-domain='shop.example.test']")
        expect(section.locator("[data-status]")).to_have_text("Pending verification")

        # Read the record from the page's DNS table, as the owner would, and "create" it.
        txt_row = section.locator("table.dns tr", has_text="TXT")
        name = txt_row.locator("td").nth(1).inner_text().strip()
        value = txt_row.locator("td").nth(2).inner_text().strip()
        assert name == "_platform-verify.shop.example.test" and re.fullmatch(r"[\w-]{30,}", value)
        page.screenshot(path=str(artifacts / "custom-domains-pending.png"), full_page=True)
        stack.dns.set_txt(name, value)
        stack.dns.add_a("shop.example.test", "127.0.0.1")

        # "Check now" queues the check; the page says so until the worker has run it.
        section.get_by_role("button", name="Check now").click()
        expect(page.locator(".messages")).to_contain_text("Checking shop.example.test now")
        expect(section.locator("[data-checking]")).to_have_text("Checking…")

        stack.run_worker()  # the check, then the certificate and the edge render it queues
        # The page's poller notices the change and reloads by itself.
        expect(section.locator("[data-status]")).to_have_text("Active", timeout=20_000)
        expect(section).to_contain_text("Certificate: issued, expires")
        page.screenshot(path=str(artifacts / "custom-domains-active.png"), full_page=True)

        # The new domain serves the shop over HTTPS through the edge (Chromium does not know
        # Pebble's root; the chain itself is checked in test_end_to_end).
        context = browser.new_context(ignore_https_errors=True)
        shop = context.new_page()
        shop.goto(f"https://shop.example.test:{stack.https_port}/")
        expect(shop.locator("h1")).to_have_text("Acme Shoes")
        shop.screenshot(path=str(artifacts / "custom-domains-storefront.png"))
    finally:
        browser.close()
