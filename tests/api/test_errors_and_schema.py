"""One error shape (RFC 9457) for every refusal, request limits, and the committed schema."""

import json
import subprocess
import sys

import pytest

from api.openapi import REGENERATE, documents, render
from tests.api.conftest import is_problem
from tests.conftest import BASE_DIR, subprocess_env
from tests.staff import admin_client, staff_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_kind_of_error_is_a_problem_that_says_what_to_fix(api_server, staff_key, make_tenant):
    make_tenant("acme")
    api = api_server(API_MAX_BODY_BYTES="2048")
    token = staff_key().token
    assert "No API endpoint" in is_problem(api.get("/api/v1/no-such-thing", token=token), 404)["detail"]
    assert "schema" in is_problem(api.get("/api/v2/tenants", token=token), 404)["detail"]
    wrong = api.call("PUT", "/api/v1/tenants/acme", token=token, json={})
    assert is_problem(wrong, 405) and "GET" in wrong.headers["Allow"]
    too_big = api.post("/api/v1/tenants", {"name": "x" * 4000}, token=token)
    assert "2048 bytes" in is_problem(too_big, 413)["detail"]
    form = api.post("/api/v1/tenants", token=token, data="subdomain=acme", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert "application/json" in is_problem(form, 415)["detail"]
    broken = api.post("/api/v1/tenants", token=token, data="{not json",
                      headers={"Content-Type": "application/json"})
    assert "Cannot parse request body" in is_problem(broken, 400)["detail"]
    incomplete = api.post("/api/v1/tenants", {"subdomain": "new-shop", "name": "New"}, token=token)
    missing = is_problem(incomplete, 422)
    fields = {e["field"] for e in missing["errors"]}
    assert fields == {"plan", "owner_email"} and all(e["location"] == "body" for e in missing["errors"])
    assert "plan" in missing["detail"] and missing["type"].endswith("validation-error")
    bad_email = api.post("/api/v1/tenants", {"subdomain": "new-shop", "name": "New", "plan": "growth",
                                             "owner_email": "not-an-email"}, token=token)
    assert "not a valid email" in is_problem(bad_email, 422)["detail"]
    retired = api.post("/api/v1/tenants", {"subdomain": "new-shop", "name": "New", "plan": "retired",
                                           "owner_email": "o@new.example"}, token=token)
    assert "not active" in is_problem(retired, 422)["detail"]
    # Refusals from the services keep their message and get the status that fits.
    domain = api.post("/api/v1/tenants/acme/domains", {"domain": "http://shop.example.test/x"}, token=token)
    assert "looks like a URL" in is_problem(domain, 422)["detail"]
    assert is_problem(api.get("/api/v1/backups/not-a-uuid", token=token), 404)
    assert is_problem(api.get("/api/v1/deployments/999999", token=token), 404)


def test_the_committed_schema_is_what_the_code_says():
    for path, document in documents().items():
        assert path.exists(), f"{path.name} is missing; run: {REGENERATE}"
        assert path.read_text() == render(document), f"{path.name} is out of date; run: {REGENERATE}"
    staff = json.loads((BASE_DIR / "docs" / "openapi.json").read_text())
    assert staff["openapi"].startswith("3.1")
    errors = staff["paths"]["/api/v1/tenants"]["post"]["responses"]["422"]["content"]
    assert list(errors) == ["application/problem+json"]


@pytest.mark.slow  # two manage.py processes
def test_the_check_command_fails_when_the_schema_is_stale(tmp_path):
    result = subprocess.run([sys.executable, "manage.py", "api_schema", "--check"], cwd=BASE_DIR,
                            env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # On copies: the committed files are read by tests on other xdist workers meanwhile.
    for name in ("openapi.json", "openapi-shop.json"):
        (tmp_path / name).write_text((BASE_DIR / "docs" / name).read_text())
    path = tmp_path / "openapi-shop.json"
    path.write_text(path.read_text().replace('"title": "Platform shop API"', '"title": "stale"'))
    result = subprocess.run([sys.executable, "manage.py", "api_schema", "--check", "--dir", str(tmp_path)],
                            cwd=BASE_DIR, env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "openapi-shop.json out of date" in result.stderr
    assert "manage.py api_schema" in result.stderr

def test_schema_is_served_and_docs_are_for_staff_on_the_control_plane_only(api_server, api_settings):
    api = api_server()
    served = api.get("/api/schema/", token=None)
    assert served.status_code == 200 and served.json()["info"]["title"] == "Platform control plane API"
    docs = api.get("/api/docs/", token=None, allow_redirects=False)
    assert docs.status_code == 302 and "/admin/login/" in docs.headers["Location"]
    client = admin_client(staff_user("olivia"))
    assert client.get("/api/docs/").status_code == 200
