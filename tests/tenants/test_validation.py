import pytest

from tenants.errors import TenantValidationError
from tenants.validation import email_normalise, schema_name_for, subdomain_normalise


@pytest.mark.parametrize(
    "raw, message",
    [
        ("ab", "3 to 63 characters"),
        ("a" * 64, "3 to 63 characters"),
        ("acme_shoes", "only letters a-z, digits and hyphens"),
        ("-acme", "start and end with a letter or digit"),
        ("acme-", "start and end with a letter or digit"),
        ("acme.shoes", "only letters"),
        ("www", "reserved by the platform"),
        ("admin", "reserved by the platform"),
        ("public", "reserved by the platform"),
        ("pg-catalog", "reserved"),
        ("xn--bcher-kva", "reserved"),
        ("ab--cd", "reserved"),
    ],
)
def test_bad_subdomains_are_refused_with_what_to_fix(raw, message):
    with pytest.raises(TenantValidationError, match=message):
        subdomain_normalise(raw)


def test_subdomain_is_lowercased_and_trimmed():
    assert subdomain_normalise("  Acme-Shoes ") == "acme-shoes"


def test_schema_name_mapping_is_one_to_one_and_legal():
    assert schema_name_for("acme-shoes") == "acme_shoes"
    longest = subdomain_normalise("a" + "-b" * 31)
    assert len(schema_name_for(longest)) == 63
    assert not schema_name_for(subdomain_normalise("pgx-shop")).startswith("pg_")


@pytest.mark.parametrize("raw", ["", "owner", "owner@", "@acme.test", "a b@acme.test"])
def test_bad_emails_are_refused(raw):
    with pytest.raises(TenantValidationError, match="not a valid email"):
        email_normalise(raw)
