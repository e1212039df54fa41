"""Domains on an AWS target: ACM certificates on the ALB's HTTPS listener, Route 53 alias records.

Idempotent sync of desired against actual, both read fresh on every run (nothing is remembered in
our database, so a failed or interrupted run is simply run again):

- desired: every active custom domain with an issued certificate (tenants.domains.selectors), and
  the platform wildcard when it is issued;
- actual: the ACM certificates tagged ``platform-target=<target name>``, the listener's
  certificates, and the ``*.<base>`` alias record in the target's hosted zone.

Certificates are *imported* into ACM from the control plane's own ACME certificates rather than
requested from ACM with DNS validation: a custom domain's DNS belongs to the shop owner, so ACM's
validation CNAME would be a second record each owner must create (and keep), while the control
plane has already proven ownership and holds the certificate (HTTP-01 answered through the ALB,
whose ``/.well-known/acme-challenge/*`` rule forwards to the control plane). One issuer for every
target also means one renewal schedule, one audit trail and one expiry alert. A renewal
re-imports under the same ARN, so the listener attachment never changes.

Past the listener's certificate quota (AWS_ALB_CERTIFICATE_LIMIT, 25 by default besides the
default certificate) domains are imported but not attached: they are named in the result, in an
``aws_domains.quota_reached`` audit event and in the error log. Already attached domains are never
pushed off by newer ones. The fix: a quota raise (up to 100) and the setting, or a second ALB.
"""

import logging
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings

from core.audit import Action, Actor, audit_record
from deployments.aws_client import aws_client
from deployments.errors import DeploymentError
from deployments.models import Target
from tenants.domains.selectors import (
    active_domain_serials,
    domain_certificates,
    platform_certificate_material,
)

logger = logging.getLogger(__name__)

TAG_TARGET, TAG_DOMAIN, TAG_SERIAL = "platform-target", "platform-domain", "platform-serial"
KEY_TYPES = ["RSA_1024", "RSA_2048", "RSA_3072", "RSA_4096", "EC_prime256v1", "EC_secp384r1", "EC_secp521r1"]


class AwsDomainsError(DeploymentError):
    pass


@dataclass
class SyncResult:
    imported: list[str] = field(default_factory=list)
    reimported: list[str] = field(default_factory=list)
    attached: list[str] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    over_quota: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    default_certificate: str = ""
    failed: dict[str, str] = field(default_factory=dict)  # domain -> why ACM refused its certificate

    @property
    def changed(self) -> bool:
        return any((self.imported, self.reimported, self.attached, self.detached, self.deleted, self.records,
                    self.default_certificate))

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass(frozen=True)
class Owned:
    arn: str
    serial: str


def _split_chain(chain_pem: bytes) -> tuple[bytes, bytes]:
    certs = x509.load_pem_x509_certificates(chain_pem)
    leaf = certs[0].public_bytes(serialization.Encoding.PEM)
    rest = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs[1:])
    return leaf, rest


class AwsDomains:
    def __init__(self, target: Target) -> None:
        if target.kind != Target.Kind.AWS:
            raise AwsDomainsError(f"{target.name} is not an AWS target.")
        self.target = target
        self.acm = aws_client("acm", region=target.aws_region)
        self.elb = aws_client("elbv2", region=target.aws_region)
        self.route53 = aws_client("route53", region=target.aws_region)
        self.result = SyncResult()

    # -- actual -----------------------------------------------------------------------------------

    def owned(self) -> dict[str, Owned]:
        """Our ACM certificates for this target: domain (or *.<base>) -> ARN and serial."""
        found: dict[str, Owned] = {}
        paginator = self.acm.get_paginator("list_certificates")
        for page in paginator.paginate(Includes={"keyTypes": KEY_TYPES}):
            for summary in page["CertificateSummaryList"]:
                arn = summary["CertificateArn"]
                tags = {t["Key"]: t.get("Value", "") for t in self.acm.list_tags_for_certificate(
                    CertificateArn=arn)["Tags"]}
                if tags.get(TAG_TARGET) == self.target.name and tags.get(TAG_DOMAIN):
                    found[tags[TAG_DOMAIN]] = Owned(arn, tags.get(TAG_SERIAL, ""))
        return found

    def listener_certificates(self) -> tuple[str, list[str]]:
        """The HTTPS listener's default certificate and its SNI certificates, in attachment order."""
        default, extra, marker = "", [], None
        while True:
            kwargs = {"ListenerArn": self.target.https_listener_arn, **({"Marker": marker} if marker else {})}
            page = self.elb.describe_listener_certificates(**kwargs)
            for cert in page["Certificates"]:
                if cert.get("IsDefault"):
                    default = cert["CertificateArn"]
                else:
                    extra.append(cert["CertificateArn"])
            marker = page.get("NextMarker")
            if not marker:
                return default, extra

    def load_balancer(self) -> dict:
        listener = self.elb.describe_listeners(ListenerArns=[self.target.https_listener_arn])["Listeners"][0]
        found = self.elb.describe_load_balancers(LoadBalancerArns=[listener["LoadBalancerArn"]])
        return found["LoadBalancers"][0]

    # -- changes ----------------------------------------------------------------------------------

    def _import(self, name: str, chain_pem: bytes, key_pem: bytes, serial: str, owned: Owned | None) -> str:
        leaf, rest = _split_chain(chain_pem)
        kwargs: dict[str, Any] = {"Certificate": leaf, "PrivateKey": key_pem}
        if rest:
            kwargs["CertificateChain"] = rest
        tags = [{"Key": TAG_TARGET, "Value": self.target.name}, {"Key": TAG_DOMAIN, "Value": name},
                {"Key": TAG_SERIAL, "Value": serial}]
        if owned is None:
            arn = self.acm.import_certificate(Tags=tags, **kwargs)["CertificateArn"]
            self.result.imported.append(name)
            return arn
        # A renewal: the same ARN, so the listener keeps serving it without a change. (A re-import
        # takes no tags; all three are written again, as moto forgets them on re-import.)
        self.acm.import_certificate(CertificateArn=owned.arn, **kwargs)
        self.acm.add_tags_to_certificate(CertificateArn=owned.arn, Tags=tags)
        self.result.reimported.append(name)
        return owned.arn

    def sync_certificates(self, owned: dict[str, Owned]) -> None:
        desired = active_domain_serials()
        arns = {name: owned[name].arn for name in desired if name in owned}
        stale = [name for name, serial in desired.items()
                 if name not in owned or owned[name].serial != serial]
        for cert in domain_certificates(stale):
            try:
                arns[cert.domain] = self._import(cert.domain, cert.chain_pem, cert.key_pem, cert.serial,
                                                 owned.get(cert.domain))
            except ClientError as exc:
                # One refused certificate must not hold up the others; a renewal ACM refused leaves
                # the previous one (still in arns) attached.
                self.result.failed[cert.domain] = str(exc)[:500]
        _, attached = self.listener_certificates()
        names_by_arn = {o.arn: name for name, o in owned.items()}
        wanted = {arns[name] for name in desired if name in arns}
        # Detach what no longer serves first, so its slot is free for a newcomer.
        gone = [arn for arn in attached if arn in names_by_arn and arn not in wanted]
        if gone:
            self.elb.remove_listener_certificates(ListenerArn=self.target.https_listener_arn,
                                                  Certificates=[{"CertificateArn": a} for a in gone])
            self.result.detached += [names_by_arn[a] for a in gone]
        kept = [a for a in attached if a not in gone]
        room = max(settings.AWS_ALB_CERTIFICATE_LIMIT - len(kept), 0)
        new = [name for name in sorted(desired) if name in arns and arns[name] not in kept]
        attach, self.result.over_quota = new[:room], new[room:]
        if attach:
            try:
                self.elb.add_listener_certificates(ListenerArn=self.target.https_listener_arn,
                                                   Certificates=[{"CertificateArn": arns[n]} for n in attach])
                self.result.attached += attach
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "TooManyCertificates":
                    raise
                self.result.over_quota = new  # AWS's own quota is lower than the setting says
        # Delete our certificates of domains that no longer serve (detached above).
        for name, own in sorted(owned.items()):
            if name not in desired and not name.startswith("*."):
                self.acm.delete_certificate(CertificateArn=own.arn)
                self.result.deleted.append(name)

    def sync_platform_certificate(self, owned: dict[str, Owned]) -> None:
        material = platform_certificate_material()
        if material is None:
            return
        name = f"*.{settings.PLATFORM_BASE_DOMAIN.strip().lower().rstrip('.')}"
        own = owned.get(name)
        arn = own.arn if own and own.serial == material.serial else self._import(
            name, material.chain_pem, material.key_pem, material.serial, own)
        default, _ = self.listener_certificates()
        if default != arn:
            self.elb.modify_listener(ListenerArn=self.target.https_listener_arn,
                                     Certificates=[{"CertificateArn": arn}])
            self.result.default_certificate = name

    def sync_records(self) -> None:
        zone = self.target.hosted_zone_id
        base = settings.PLATFORM_BASE_DOMAIN.strip().lower().rstrip(".")
        lb = self.load_balancer()
        alias = {"HostedZoneId": lb["CanonicalHostedZoneId"], "DNSName": f"{lb['DNSName']}.".lower(),
                 "EvaluateTargetHealth": False}
        name = f"*.{base}."
        found = self.route53.list_resource_record_sets(
            HostedZoneId=zone, StartRecordName=name, StartRecordType="A", MaxItems="1"
        )["ResourceRecordSets"]
        # Route 53 spells a leading * as \052 in answers.
        current = next(
            (r for r in found if r["Name"].replace("\\052", "*") == name and r["Type"] == "A"), None
        )
        target = (current or {}).get("AliasTarget") or {}
        if current and target.get("DNSName", "").lower().rstrip(".") == alias["DNSName"].rstrip("."):
            return
        self.route53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={
            "Comment": f"platform subdomains to {self.target.name}",
            "Changes": [{"Action": "UPSERT",
                         "ResourceRecordSet": {"Name": name, "Type": "A", "AliasTarget": alias}}],
        })
        self.result.records.append(f"{name} A alias {lb['DNSName']}")

    def sync(self) -> SyncResult:
        if self.target.https_listener_arn:
            owned = self.owned()
            # The default first: moto's modify_listener drops the SNI certificates (AWS's keeps them),
            # and a sync that sets it afterwards would leave moto's listener without them.
            self.sync_platform_certificate(owned)
            self.sync_certificates(owned)
        if self.target.hosted_zone_id:
            self.sync_records()
        return self.result


def aws_domains_sync(*, target: Target, actor: Actor) -> SyncResult:
    """Bring the target's ACM certificates, listener and Route 53 record in line with what serves."""
    sync = AwsDomains(target)
    try:
        result = sync.sync()
    except (BotoCoreError, ClientError) as exc:
        done = sync.result.summary()
        audit_record(actor=actor, action=Action.AWS_DOMAINS_SYNC_FAILED, target=target.name,
                     details={"error": str(exc)[:1000], "done": done})
        raise AwsDomainsError(
            f"Syncing domains to AWS target {target.name} failed: {exc}. What was done before stays "
            f"({done or 'nothing'}); the next sync retries. Check the worker's AWS permissions (acm, "
            "elasticloadbalancing, route53) and the target's https_listener_arn and hosted_zone_id."
        ) from None
    if result.failed:
        logger.error("AWS target %s: ACM refused the certificates of %s", target.name,
                     "; ".join(f"{k}: {v}" for k, v in sorted(result.failed.items())[:10]))
        audit_record(actor=actor, action=Action.AWS_DOMAINS_SYNC_FAILED, target=target.name,
                     details={"refused": dict(sorted(result.failed.items())[:50])})
    if result.over_quota:
        logger.error("AWS target %s: %d domain(s) not attached, listener certificate quota (%d) reached: %s",
                     target.name, len(result.over_quota), settings.AWS_ALB_CERTIFICATE_LIMIT,
                     ", ".join(result.over_quota[:20]))
        audit_record(actor=actor, action=Action.AWS_DOMAINS_QUOTA_REACHED, target=target.name,
                     details={"limit": settings.AWS_ALB_CERTIFICATE_LIMIT,
                              "not_attached": result.over_quota[:100],
                              "fix": "raise the ALB certificate quota with AWS, then "
                                     "AWS_ALB_CERTIFICATE_LIMIT; or serve these domains from a second ALB"})
    if result.changed:
        audit_record(actor=actor, action=Action.AWS_DOMAINS_SYNCED, target=target.name,
                     details=result.summary())
    return result
