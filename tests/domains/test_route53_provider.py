"""The Route 53 DNS provider of the platform certificate, against a real moto_server."""

import boto3
import pytest
import requests

from tenants.domains.dns_providers import DnsProviderError, Route53Provider, dns_provider

NAME = "_acme-challenge.shops.example.com"


@pytest.fixture
def route53(moto_url, settings, monkeypatch):
    requests.post(f"{moto_url}/moto-api/reset", timeout=10)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    settings.AWS_ENDPOINT_URL = moto_url
    client = boto3.client("route53", region_name="us-east-1", endpoint_url=moto_url)
    zone = client.create_hosted_zone(Name="shops.example.com", CallerReference="t1")["HostedZone"]["Id"]
    settings.PLATFORM_CERT_DNS_PROVIDER = "route53"
    settings.PLATFORM_CERT_ROUTE53_ZONE_ID = zone.rsplit("/", 1)[-1]
    return client, zone


def txt(client, zone) -> list[str]:
    records = client.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return sorted(
        r["Value"]
        for s in records
        if s["Type"] == "TXT" and s["Name"] == f"{NAME}."
        for r in s["ResourceRecords"]
    )


def test_records_are_added_beside_each_other_waited_for_and_removed(route53):
    client, zone = route53
    provider = dns_provider()
    assert isinstance(provider, Route53Provider)
    # A wildcard and its base answer at the same name: the second value joins the first.
    provider.set_txt(NAME, "token-for-wildcard")
    provider.set_txt(NAME, "token-for-base")
    provider.set_txt(NAME, "token-for-base")  # idempotent
    assert txt(client, zone) == ['"token-for-base"', '"token-for-wildcard"']
    assert len(provider.changes) == 2
    provider.wait(10)  # every change INSYNC
    assert provider.changes == []
    provider.clear_txt(NAME, "token-for-wildcard")
    assert txt(client, zone) == ['"token-for-base"']
    provider.clear_txt(NAME, "token-for-base")
    assert txt(client, zone) == []
    provider.clear_txt(NAME, "token-for-base")  # already gone: nothing to do
    provider.wait(10)


def test_a_zone_that_does_not_exist_is_named_in_the_error(route53, settings):
    settings.PLATFORM_CERT_ROUTE53_ZONE_ID = "ZNOSUCHZONE"
    provider = dns_provider()
    with pytest.raises(DnsProviderError, match="Route 53 refused the TXT record .* in zone ZNOSUCHZONE"):
        provider.set_txt(NAME, "x")
