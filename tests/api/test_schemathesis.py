"""A client nobody here wrote: Schemathesis fuzzes the live server from the committed schemas.

0 server errors and 0 answers that break the schema (status codes, content types, bodies), with
a bounded number of examples per operation so it stays a few minutes at most.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from api.models import SCOPES, SHOP_SCOPES
from tests.api.conftest import ADMIN_HOST
from tests.conftest import BASE_DIR

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def fuzz(schema: str, address: str, host: str, token: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCHEMATHESIS), "run", str(BASE_DIR / "docs" / schema), "--url", f"http://{address}",
         "-H", f"Host: {host}", "-H", f"Authorization: Bearer {token}", "--checks", CHECKS,
         "--max-examples", "8", "--seed", "1", "--phases", "examples,coverage,fuzzing",
         "--request-timeout", "30", "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )


def test_schemathesis_finds_no_server_error_and_no_schema_violation(api_server, staff_key, shop_key,
                                                                     make_tenant, tmp_path):
    assert SCHEMATHESIS.exists(), "pip install schemathesis (requirements-dev.txt)"
    acme = make_tenant("acme")
    api = api_server(API_RATE_LIMIT_PER_MINUTE="0", CUSTOM_DOMAIN_CHECK_NOW_SECONDS="1")
    staff = fuzz("openapi.json", api.address, ADMIN_HOST, staff_key(list(SCOPES)).token, tmp_path)
    assert staff.returncode == 0, staff.stdout[-6000:] + staff.stderr[-2000:]
    owner = shop_key(acme, scopes=list(SHOP_SCOPES)).token
    shop = fuzz("openapi-shop.json", api.address, "acme.platform.test", owner, tmp_path)
    assert shop.returncode == 0, shop.stdout[-6000:] + shop.stderr[-2000:]
