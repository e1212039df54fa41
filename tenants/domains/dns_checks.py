"""DNS and HTTP checks behind custom-domain verification: the one place that resolves names.

The resolver is built lazily from settings (CUSTOM_DOMAIN_DNS_NAMESERVERS) and rebuilt when they
change. Each check returns what it saw; tenants.domains turns that into statuses and messages.
"""

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import dns.exception
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.rdtypes.ANY.CAA
import dns.rdtypes.nsbase
import dns.rdtypes.txtbase
import dns.resolver
from django.conf import settings

from core import outbound

_lock = threading.Lock()
_resolver: tuple[tuple[tuple[str, ...], float], dns.resolver.Resolver] | None = None


class DnsUnavailable(Exception):
    """The nameservers did not answer (timeout, SERVFAIL): nothing can be concluded."""


# RFC 8659 climbs from the name to the root, one lookup per label. Real custom domains sit a few
# labels below their registrable domain; a 122-label name would cost 121 lookups of up to
# CUSTOM_DOMAIN_DNS_TIMEOUT each. Deeper names are refused with a message instead.
CAA_MAX_LABELS = 10


def _settings_key() -> tuple[tuple[str, ...], float]:
    return (tuple(settings.CUSTOM_DOMAIN_DNS_NAMESERVERS), settings.CUSTOM_DOMAIN_DNS_TIMEOUT)


def dns_resolver() -> dns.resolver.Resolver:
    global _resolver
    key = _settings_key()
    with _lock:
        if _resolver is None or _resolver[0] != key:
            servers, timeout = key
            if servers:
                resolver = dns.resolver.Resolver(configure=False)
                resolver.nameservers = [_nameserver(s) for s in servers]
            else:
                resolver = dns.resolver.Resolver()
            resolver.timeout = resolver.lifetime = timeout
            # Never cache: "Check now" must see a record the tenant created a second ago.
            resolver.cache = None
            _resolver = (key, resolver)
        return _resolver[1]


def _nameserver(spec: str) -> dns.nameserver.Do53Nameserver:
    host, _, port = spec.strip().rpartition(":") if spec.count(":") == 1 else (spec.strip(), "", "53")
    return dns.nameserver.Do53Nameserver(host or spec.strip(), int(port or 53))


def _lookup(name: str, rdtype: str, lifetime: float | None = None) -> list[str]:
    """Values of ``name``'s ``rdtype`` records, CNAMEs not followed; [] when there are none."""
    try:
        answer = dns_resolver().resolve(name, rdtype, raise_on_no_answer=False, search=False,
                                        lifetime=lifetime)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers) as exc:
        if isinstance(exc, dns.resolver.NXDOMAIN):
            return []
        raise DnsUnavailable(f"no nameserver answered for {name} {rdtype}") from None
    except (dns.exception.Timeout, dns.resolver.LifetimeTimeout):
        raise DnsUnavailable(
            f"DNS lookup of {name} {rdtype} timed out after {settings.CUSTOM_DOMAIN_DNS_TIMEOUT:g} s"
        ) from None
    wanted = dns.rdatatype.from_text(rdtype)
    values: list[str] = []
    for rrset in answer.response.answer:
        if rrset.rdtype == wanted and rrset.name == dns.name.from_text(name):
            values.extend(_value(rdata, rdtype) for rdata in rrset)
    return values


def _value(rdata: dns.rdata.Rdata, rdtype: str) -> str:
    # _lookup keeps only records of ``rdtype``, which dnspython parses into that type's class.
    if rdtype == "TXT":
        assert isinstance(rdata, dns.rdtypes.txtbase.TXTBase)
        return b"".join(rdata.strings).decode(errors="replace")
    if rdtype == "CNAME":
        assert isinstance(rdata, dns.rdtypes.nsbase.NSBase)  # CNAME's base class
        return rdata.target.to_text().rstrip(".").lower()
    if rdtype == "CAA":
        assert isinstance(rdata, dns.rdtypes.ANY.CAA.CAA)
        return f"{rdata.flags} {rdata.tag.decode()} {rdata.value.decode()}"
    return rdata.to_text()


@dataclass
class DnsRow:
    """One line of the table tenants see: the record to create and whether we see it."""

    type: str
    name: str
    value: str
    purpose: str
    seen: bool = False
    found: list[str] = field(default_factory=list)


@dataclass
class Diagnosis:
    ownership_ok: bool = False
    routing_ok: bool = False
    caa_ok: bool = True
    # True when a lookup timed out or failed: the result says nothing about the tenant's DNS.
    inconclusive: bool = False
    rows: list[DnsRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.ownership_ok and self.routing_ok and self.caa_ok and not self.inconclusive

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_record_name(domain: str) -> str:
    return f"{settings.CUSTOM_DOMAIN_VERIFY_PREFIX}.{domain}"


def diagnose(*, domain: str, token: str, cname_target: str, ownership_known: bool = False) -> Diagnosis:
    """Check ownership (TXT or HTTP token), routing (CNAME or A/AAAA) and CAA for ``domain``.

    ``ownership_known``: an earlier check proved ownership, so a missing TXT record is no problem
    (tenants may remove it once verified, or prove ownership first and move DNS later).
    """
    diag = Diagnosis()
    txt_name = verify_record_name(domain)
    txt_row = DnsRow("TXT", txt_name, token, "proves you own the domain")
    edge_v4, edge_v6 = settings.CUSTOM_DOMAIN_EDGE_IPV4, settings.CUSTOM_DOMAIN_EDGE_IPV6
    cname_row = DnsRow("CNAME", domain, cname_target, "sends your visitors to your shop")
    diag.rows = [txt_row, cname_row]
    if edge_v4:
        diag.rows.append(
            DnsRow("A", domain, ", ".join(edge_v4), "instead of the CNAME, for an apex domain")
        )
    if _too_deep(diag, domain, txt_name):
        return diag
    try:
        _check_ownership(diag, txt_row, domain, token)
        addresses = _check_routing(diag, cname_row, domain, cname_target, edge_v4, edge_v6)
        _check_caa(diag, domain)
        if not diag.ownership_ok and (
            ownership_known or (addresses and _http_token_seen(diag, domain, token))
        ):
            diag.ownership_ok = True
            diag.problems = [p for p in diag.problems if not p.startswith("TXT record")]
    except DnsUnavailable as exc:
        diag.inconclusive = True
        diag.problems.append(f"Could not check DNS: {exc}. We will try again automatically.")
    return diag


def _too_deep(diag: Diagnosis, domain: str, txt_name: str) -> bool:
    """Names no check can serve, refused before any lookup (see CAA_MAX_LABELS)."""
    labels = len(domain.split("."))
    if labels > CAA_MAX_LABELS:
        diag.caa_ok = False
        diag.problems.append(
            f"{domain} has {labels} labels; we check CAA records for names of at most "
            f"{CAA_MAX_LABELS} labels: use a shorter name."
        )
    elif len(txt_name) > 253:
        diag.problems.append(f"The TXT record name {txt_name} would be longer than 253 characters; "
                             "use a shorter domain.")
    return bool(diag.problems)


def _check_ownership(diag: Diagnosis, row: DnsRow, domain: str, token: str) -> None:
    row.found = _lookup(row.name, "TXT")
    row.seen = token in row.found
    diag.ownership_ok = row.seen
    if row.seen:
        return
    if row.found:
        diag.problems.append(
            f"TXT record {row.name} has {', '.join(repr(v) for v in row.found)}, not your token; "
            f"set its value to {token!r}."
        )
    else:
        diag.problems.append(f"TXT record {row.name} is missing: create it with the value {token!r}.")


def _check_routing(diag: Diagnosis, row: DnsRow, domain: str, cname_target: str, edge_v4: list[str],
                   edge_v6: list[str]) -> list[str]:
    """Returns the IPv4 addresses the domain's A records hold (empty for a CNAME or none)."""
    cnames = _lookup(domain, "CNAME")
    row.found = cnames
    if cnames:
        row.seen = cname_target in cnames
        if row.seen:
            diag.routing_ok = True
        else:
            diag.problems.append(f"CNAME {domain} points to {cnames[0]}; change it to {cname_target}.")
        return []
    v4, v6 = _lookup(domain, "A"), _lookup(domain, "AAAA")
    a_rows = [r for r in diag.rows if r.type == "A"]
    if a_rows:
        a_rows[0].found = v4
    if not v4 and not v6:
        where = f" (or A records to {', '.join(edge_v4)} for an apex domain)" if edge_v4 else ""
        diag.problems.append(
            f"{domain} has no CNAME or A record: create CNAME {domain} -> {cname_target}{where}."
        )
        return []
    ours_v4 = [a for a in v4 if a in edge_v4]
    foreign = [a for a in v4 if a not in edge_v4] + [a for a in v6 if a not in edge_v6]
    if ours_v4 and a_rows:
        a_rows[0].seen = not foreign
    if foreign and ours_v4:
        diag.problems.append(
            f"{domain} has conflicting address records: remove {', '.join(foreign)} "
            f"(keep only {', '.join(edge_v4)})."
        )
        return v4
    if foreign:
        target = f"A records to {', '.join(edge_v4)}" if edge_v4 else f"a CNAME to {cname_target}"
        diag.problems.append(
            f"{domain} points to {', '.join(foreign)}, which is not us; replace it with {target}."
        )
        return v4
    diag.routing_ok = True
    return v4


def _check_caa(diag: Diagnosis, domain: str) -> None:
    """RFC 8659: the closest CAA record set up the tree decides which CAs may issue.

    At most CAA_MAX_LABELS labels, under one deadline (CUSTOM_DOMAIN_CAA_TIMEOUT_SECONDS).
    """
    labels = domain.split(".")[-CAA_MAX_LABELS:]  # diagnose refused deeper names already
    budget = settings.CUSTOM_DOMAIN_CAA_TIMEOUT_SECONDS
    deadline = time.monotonic() + budget
    for i in range(len(labels) - 1):
        name = ".".join(labels[i:])
        over = DnsUnavailable(f"the CAA check of {domain} took longer than {budget:g} s "
                              f"({i} of {len(labels) - 1} names looked up)")
        left = deadline - time.monotonic()
        if left <= 0:
            raise over
        lifetime = min(left, settings.CUSTOM_DOMAIN_DNS_TIMEOUT)
        try:
            records = _lookup(name, "CAA", lifetime=lifetime)
        except DnsUnavailable:
            if lifetime < settings.CUSTOM_DOMAIN_DNS_TIMEOUT:
                raise over from None  # cut short by the walk's deadline, not by the nameserver
            raise
        if not records:
            continue
        issuers = [r.split(" ", 2)[2].strip('"').split(";")[0].strip() for r in records
                   if r.split(" ", 2)[1] == "issue"]
        if issuers and not set(issuers) & set(settings.CUSTOM_DOMAIN_CAA_IDENTITIES):
            diag.caa_ok = False
            want = settings.CUSTOM_DOMAIN_CAA_IDENTITIES[0]
            diag.problems.append(
                f"CAA record on {name} allows only {', '.join(issuers)} to issue certificates; "
                f'add CAA 0 issue "{want}" so we can get one for you.'
            )
        return


def resolve_addresses(name: str) -> list[str]:
    """A and AAAA addresses of ``name`` (CNAMEs followed) from the verification nameservers.

    The resolver core.outbound uses for the HTTP ownership check, so a redirect to another name is
    resolved (and checked) the same way as the domain itself.
    """
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = dns_resolver().resolve(name, rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers):
            raise outbound.OutboundError(f"cannot resolve {name}: no nameserver answered") from None
        except dns.exception.DNSException as exc:  # a name DNS cannot hold (too long, empty label)
            raise outbound.OutboundError(f"cannot resolve {name}: {exc}") from None
        if answer.rrset is not None:
            found.extend(rdata.to_text() for rdata in answer.rrset)
    return found


def _http_token_seen(diag: Diagnosis, domain: str, token: str) -> bool:
    """The HTTP token check: the tenant's own web server (where the domain points today) serves
    the token as a file. The platform never serves these tokens itself: anyone can claim a name
    that already points at the shared edge, so only the current origin's answer proves control.

    Through core.outbound: addresses checked and pinned, one deadline, a byte cap, redirects
    re-checked. A refusal or a timeout is told to the tenant; "no web server there" is not.
    """
    port = settings.CUSTOM_DOMAIN_HTTP_CHECK_PORT
    url = f"http://{domain}{'' if port == 80 else f':{port}'}/.well-known/platform-verify/{token}"
    try:
        response = outbound.fetch(url, resolve=resolve_addresses, max_bytes=4096)
    except (outbound.OutboundRefused, outbound.OutboundTimeout) as exc:
        diag.problems.append(f"HTTP check of {domain}: {exc}.")
        return False
    except outbound.OutboundError:
        return False
    return response.status == 200 and response.text.strip() == token
