"""DNS providers for ACME DNS-01: they set and clear the ``_acme-challenge`` TXT records.

The interface (any class with these three methods, built without arguments from settings):

- ``set_txt(name, value)``: add ``value`` to the TXT records of ``name`` (a wildcard and its base
  share one name, so a second value must not replace the first);
- ``clear_txt(name, value)``: remove that value again (the others stay);
- ``wait(timeout)``: return once every change made so far is live at the provider (Route 53:
  INSYNC), or raise DnsProviderError.

PLATFORM_CERT_DNS_PROVIDER picks one: ``route53``, ``challtestsrv`` (tests and development) or a
dotted path to a class of one's own. After ``wait`` the caller may also check the record on the
zone's nameservers (PLATFORM_CERT_DNS_CHECK_NAMESERVERS) before the CA is asked.
"""

import json
import time
from typing import Any, Protocol

import dns.exception
import dns.resolver
from django.conf import settings
from django.utils.module_loading import import_string

from core import outbound
from tenants.domains.dns_checks import _nameserver
from tenants.errors import TenantError


class DnsProviderError(TenantError):
    """The provider refused or could not be reached; the message names the provider and the fix."""


class DnsProvider(Protocol):
    def set_txt(self, name: str, value: str) -> None: ...

    def clear_txt(self, name: str, value: str) -> None: ...

    def wait(self, timeout: float) -> None: ...


def _fqdn(name: str) -> str:
    return name.rstrip(".") + "."


class ChallTestSrvProvider:
    """pebble-challtestsrv's management API (the DNS server the tests and the demo use).

    Its API can only clear every TXT value of a name, so clear_txt clears the name and puts the
    other values this provider set back.
    """

    def __init__(self) -> None:
        self.url = settings.PLATFORM_CERT_CHALLTESTSRV_URL.rstrip("/")
        self.values: dict[str, list[str]] = {}

    def _post(self, endpoint: str, **payload: Any) -> None:
        try:
            response = outbound.fetch(f"{self.url}/{endpoint}", method="POST",
                                      body=json.dumps(payload).encode(), timeout=10)
        except outbound.OutboundError as exc:
            raise DnsProviderError(
                f"pebble-challtestsrv at {self.url} did not take the {endpoint} request ({exc}); check "
                "PLATFORM_CERT_CHALLTESTSRV_URL (and OUTBOUND_ALLOWED_NETWORKS for a loopback address)."
            ) from None
        if response.status != 200:
            raise DnsProviderError(
                f"pebble-challtestsrv at {self.url} answered {endpoint} with HTTP {response.status}."
            )

    def set_txt(self, name: str, value: str) -> None:
        self._post("set-txt", host=_fqdn(name), value=value)
        self.values.setdefault(name, []).append(value)

    def clear_txt(self, name: str, value: str) -> None:
        self._post("clear-txt", host=_fqdn(name))
        rest = [v for v in self.values.pop(name, []) if v != value]
        for other in rest:
            self.set_txt(name, other)

    def wait(self, timeout: float) -> None:
        return None  # its answers change at once


class Route53Provider:
    """Amazon Route 53 through boto3, in the hosted zone PLATFORM_CERT_ROUTE53_ZONE_ID.

    Credentials come from the worker's environment or instance role (route53:ChangeResourceRecordSets,
    route53:ListResourceRecordSets and route53:GetChange on that zone are enough).
    """

    TTL = 60

    def __init__(self) -> None:
        import boto3
        from botocore.config import Config

        self.zone = settings.PLATFORM_CERT_ROUTE53_ZONE_ID
        if not self.zone:
            raise DnsProviderError(
                "PLATFORM_CERT_DNS_PROVIDER is route53 but PLATFORM_CERT_ROUTE53_ZONE_ID is empty; set it to "
                "the hosted zone id of PLATFORM_BASE_DOMAIN."
            )
        self.client = boto3.session.Session().client(
            "route53", region_name="us-east-1", endpoint_url=settings.AWS_ENDPOINT_URL or None,
            config=Config(connect_timeout=5, read_timeout=30,
                          retries={"max_attempts": 3, "mode": "standard"}),
        )
        self.changes: list[str] = []

    def _call(self, name: str, method: str, **kwargs: Any) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise DnsProviderError(
                f"Route 53 refused the TXT record {name} in zone {self.zone}: {exc}. Check the zone id and "
                "that the worker's AWS credentials may change it."
            ) from None

    def _current(self, name: str) -> list[str]:
        found = self._call(
            name, "list_resource_record_sets",
            HostedZoneId=self.zone, StartRecordName=_fqdn(name), StartRecordType="TXT", MaxItems="1",
        )["ResourceRecordSets"]
        for record in found:
            if record["Name"].rstrip(".").lower() == name.rstrip(".").lower() and record["Type"] == "TXT":
                return [r["Value"] for r in record.get("ResourceRecords", [])]
        return []

    def _change(self, name: str, action: str, values: list[str], comment: str) -> None:
        answer = self._call(
            name, "change_resource_record_sets",
            HostedZoneId=self.zone,
            ChangeBatch={"Comment": comment, "Changes": [{"Action": action, "ResourceRecordSet": {
                "Name": _fqdn(name), "Type": "TXT", "TTL": self.TTL,
                "ResourceRecords": [{"Value": v} for v in values],
            }}]},
        )
        self.changes.append(answer["ChangeInfo"]["Id"])

    def set_txt(self, name: str, value: str) -> None:
        values = self._current(name)
        quoted = f'"{value}"'
        if quoted not in values:
            self._change(name, "UPSERT", [*values, quoted], "ACME DNS-01 challenge")

    def clear_txt(self, name: str, value: str) -> None:
        values = self._current(name)
        rest = [v for v in values if v != f'"{value}"']
        if rest == values:
            return
        if rest:
            self._change(name, "UPSERT", rest, "ACME DNS-01 challenge answered")
        else:
            self._change(name, "DELETE", values, "ACME DNS-01 challenge answered")

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for change in self.changes:
            while self._call(change, "get_change", Id=change)["ChangeInfo"]["Status"] != "INSYNC":
                if time.monotonic() > deadline:
                    raise DnsProviderError(
                        f"Route 53 change {change} was not INSYNC within {timeout:.0f} s; try again later."
                    )
                time.sleep(2)
        self.changes.clear()


PROVIDERS: dict[str, type[DnsProvider]] = {"challtestsrv": ChallTestSrvProvider, "route53": Route53Provider}


def dns_provider() -> DnsProvider:
    """The provider PLATFORM_CERT_DNS_PROVIDER names, ready to use."""
    choice = settings.PLATFORM_CERT_DNS_PROVIDER.strip()
    if not choice:
        raise DnsProviderError(
            "No DNS provider for the platform certificate: set PLATFORM_CERT_DNS_PROVIDER to route53, "
            "challtestsrv or the dotted path of a provider class (docs/custom-domains.md)."
        )
    if choice in PROVIDERS:
        return PROVIDERS[choice]()
    try:
        cls = import_string(choice)
    except ImportError as exc:
        raise DnsProviderError(
            f"PLATFORM_CERT_DNS_PROVIDER={choice!r} is neither route53, challtestsrv nor an importable "
            f"class ({exc})."
        ) from None
    provider: DnsProvider = cls()
    missing = [m for m in ("set_txt", "clear_txt", "wait") if not callable(getattr(provider, m, None))]
    if missing:
        raise DnsProviderError(f"{choice} lacks {', '.join(missing)}; a DNS provider needs all three.")
    return provider


def txt_visible(name: str, values: list[str], timeout: float) -> None:
    """Wait until every nameserver in PLATFORM_CERT_DNS_CHECK_NAMESERVERS answers all ``values``."""
    servers = settings.PLATFORM_CERT_DNS_CHECK_NAMESERVERS
    if not servers:
        return
    deadline = time.monotonic() + timeout
    pending = list(servers)
    while pending:
        server = pending[0]
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [_nameserver(server)]
        resolver.timeout = resolver.lifetime = 3.0
        resolver.cache = None
        try:
            seen = {b"".join(r.strings).decode() for r in resolver.resolve(name, "TXT")}
        except (dns.exception.DNSException, OSError):
            seen = set()
        if set(values) <= seen:
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            raise DnsProviderError(
                f"The TXT record {name} did not show on nameserver {server} within {timeout:.0f} s "
                f"(it answers {sorted(seen) or 'nothing'}); check that the DNS provider writes to the zone "
                "those nameservers serve."
            )
        time.sleep(1)
