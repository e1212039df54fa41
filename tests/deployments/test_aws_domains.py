"""Custom domains and the platform wildcard on an AWS target, against a real moto_server:
ACM imports, the HTTPS listener's SNI certificates and its quota, the Route 53 alias record."""

from pathlib import Path

import boto3
import django_rq
import pytest
import requests
from cryptography import x509

from core.audit import Actor
from core.crypto import secret_encrypt
from core.models import AuditEvent
from deployments.engines.aws_domains import TAG_DOMAIN, AwsDomainsError, aws_domains_sync
from deployments.models import Environment, Target
from tenants.domains import services as domain_services
from tenants.models import Certificate, Domain, PlatformCertificate
from tenants.signals import edge_changed
from tenants.worker import TenantSafeSimpleWorker
from tests.domains.components import make_tls_files
from tests.domains.test_verification import shop

pytestmark = pytest.mark.django_db(transaction=True)
ACTOR = Actor.command("pytest")
REGION = "eu-west-1"
BASE = "shops.example.com"


@pytest.fixture
def aws_env(moto_url, settings, monkeypatch, tmp_path):
    requests.post(f"{moto_url}/moto-api/reset", timeout=10)
    settings.AWS_ENDPOINT_URL = moto_url
    settings.PLATFORM_BASE_DOMAIN = BASE
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)

    def client(name):
        return boto3.client(name, region_name=REGION, endpoint_url=moto_url)

    ec2, elb, acm, r53 = client("ec2"), client("elbv2"), client("acm"), client("route53")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{az}")[
        "Subnet"]["SubnetId"] for i, az in ((1, "a"), (2, "b"))]
    lb = elb.create_load_balancer(Name="shop", Subnets=subnets)["LoadBalancers"][0]
    group = elb.create_target_group(Name="shop-web", Protocol="HTTP", Port=8080, VpcId=vpc,
                                    TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    # What Terraform made: the listener's first default certificate (not ours: never touched).
    chain, key = pem_pair(tmp_path / "bootstrap", "bootstrap.example.com")
    bootstrap = acm.import_certificate(Certificate=chain, PrivateKey=key)["CertificateArn"]
    listener = elb.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTPS", Port=443,
        Certificates=[{"CertificateArn": bootstrap}],
        DefaultActions=[{"Type": "forward", "TargetGroupArn": group}],
    )["Listeners"][0]["ListenerArn"]
    zone = r53.create_hosted_zone(Name=BASE, CallerReference="z")["HostedZone"]["Id"].rsplit("/", 1)[-1]
    target = Target.objects.create(
        environment=Environment.objects.create(name="production"), name="aws-prod", kind=Target.Kind.AWS,
        aws_region=REGION, https_listener_arn=listener, hosted_zone_id=zone,
    )
    return {"acm": acm, "elb": elb, "r53": r53, "listener": listener, "zone": zone, "lb": lb,
            "bootstrap": bootstrap, "target": target, "tmp": tmp_path}


def pem_pair(folder: Path, name: str) -> tuple[bytes, bytes]:
    ca, cert, key = make_tls_files(folder, [name])
    return cert.read_bytes() + ca.read_bytes(), key.read_bytes()


def certify(domain: Domain, folder: Path) -> str:
    """Store an issued certificate for the domain as issuance would (encrypted); returns its serial."""
    chain, key = pem_pair(folder / domain.domain / str(len(list(folder.glob("**/*.pem")))), domain.domain)
    leaf = x509.load_pem_x509_certificates(chain)[0]
    serial = format(leaf.serial_number, "x")
    Certificate.objects.update_or_create(domain=domain, defaults=dict(
        status=Certificate.Status.ISSUED, chain_encrypted=secret_encrypt(chain),
        key_encrypted=secret_encrypt(key),
        serial=serial, not_after=leaf.not_valid_after_utc,
    ))
    return serial


def listener_state(env) -> tuple[str, set[str]]:
    certs = env["elb"].describe_listener_certificates(ListenerArn=env["listener"])["Certificates"]
    default = next(c["CertificateArn"] for c in certs if c.get("IsDefault"))
    return default, {c["CertificateArn"] for c in certs if not c.get("IsDefault")}


def acm_by_domain(env) -> dict[str, str]:
    out = {}
    for summary in env["acm"].list_certificates()["CertificateSummaryList"]:
        tags = {t["Key"]: t["Value"] for t in env["acm"].list_tags_for_certificate(
            CertificateArn=summary["CertificateArn"])["Tags"]}
        if TAG_DOMAIN in tags:
            out[tags[TAG_DOMAIN]] = summary["CertificateArn"]
    return out


def test_domains_follow_the_platform_on_the_alb_and_route53(aws_env, plans, settings):
    env, target = aws_env, aws_env["target"]
    settings.AWS_ALB_CERTIFICATE_LIMIT = 2
    tenant = shop(plans, "boots")
    domains = {}
    for name in ("a.boots.test", "b.boots.test", "c.boots.test"):
        domains[name] = Domain.objects.create(tenant=tenant, domain=name, kind=Domain.Kind.CUSTOM,
                                              status=Domain.Status.ACTIVE)
        certify(domains[name], env["tmp"])
    # Not active yet: nothing of it goes to AWS.
    pending = Domain.objects.create(tenant=tenant, domain="pending.boots.test", kind=Domain.Kind.CUSTOM,
                                    status=Domain.Status.CERTIFICATE_PENDING)
    chain, key = pem_pair(env["tmp"] / "wild", f"*.{BASE}")
    wildcard = x509.load_pem_x509_certificates(chain)[0]
    PlatformCertificate.objects.create(
        base_domain=BASE, names=[BASE, f"*.{BASE}"], status=PlatformCertificate.Status.ISSUED,
        chain_encrypted=secret_encrypt(chain), key_encrypted=secret_encrypt(key),
        serial=format(wildcard.serial_number, "x"), not_after=wildcard.not_valid_after_utc,
    )

    result = aws_domains_sync(target=target, actor=ACTOR)
    # Imported, two attached by SNI, the third past the quota: named, audited, not attached.
    arns = acm_by_domain(env)
    assert set(arns) == {"a.boots.test", "b.boots.test", "c.boots.test", f"*.{BASE}"}
    assert sorted(result.imported) == sorted(arns)
    default, attached = listener_state(env)
    assert attached == {arns["a.boots.test"], arns["b.boots.test"]}
    assert result.over_quota == ["c.boots.test"]
    quota = AuditEvent.objects.get(action="aws_domains.quota_reached")
    assert quota.details["not_attached"] == ["c.boots.test"] and quota.details["limit"] == 2
    # The chain went in as certificate + chain, the key with it.
    described = env["acm"].get_certificate(CertificateArn=arns["a.boots.test"])
    leaf = x509.load_pem_x509_certificate(described["Certificate"].encode())
    assert leaf.subject.rfc4514_string() == "CN=a.boots.test"
    assert described["CertificateChain"].startswith("-----BEGIN CERTIFICATE-----")
    assert pending.domain not in arns
    # The platform wildcard is the listener's default certificate now.
    assert default == arns[f"*.{BASE}"] and result.default_certificate == f"*.{BASE}"
    # *.<base> is an alias to the ALB in the configured zone.
    records = env["r53"].list_resource_record_sets(HostedZoneId=env["zone"])["ResourceRecordSets"]
    alias = [r for r in records if r["Type"] == "A" and r["Name"].replace("\\052", "*") == f"*.{BASE}."]
    assert len(alias) == 1
    assert alias[0]["AliasTarget"]["DNSName"].rstrip(".").lower() == env["lb"]["DNSName"].lower()
    assert alias[0]["AliasTarget"]["HostedZoneId"] == env["lb"]["CanonicalHostedZoneId"]
    assert AuditEvent.objects.filter(action="aws_domains.synced", target="aws-prod").count() == 1

    # Idempotent: a second run changes nothing and writes no "synced" event.
    again = aws_domains_sync(target=target, actor=ACTOR)
    assert not again.changed and again.over_quota == ["c.boots.test"]
    assert AuditEvent.objects.filter(action="aws_domains.synced").count() == 1

    # A renewal re-imports under the same ARN: the listener is not touched.
    certify(domains["a.boots.test"], env["tmp"])
    renewed = aws_domains_sync(target=target, actor=ACTOR)
    assert renewed.reimported == ["a.boots.test"] and not renewed.attached and not renewed.detached
    assert acm_by_domain(env)["a.boots.test"] == arns["a.boots.test"]
    served = env["acm"].get_certificate(CertificateArn=arns["a.boots.test"])["Certificate"]
    stored = Certificate.objects.get(domain=domains["a.boots.test"]).serial
    assert format(x509.load_pem_x509_certificate(served.encode()).serial_number, "x") == stored

    # A removed domain is detached and deleted; its slot goes to the one waiting past the quota.
    domain_services.domain_remove(domain=domains["b.boots.test"], actor=ACTOR)
    removed = aws_domains_sync(target=target, actor=ACTOR)
    assert removed.detached == ["b.boots.test"] and removed.deleted == ["b.boots.test"]
    assert removed.attached == ["c.boots.test"] and removed.over_quota == []
    arns_now = acm_by_domain(env)
    assert "b.boots.test" not in arns_now
    assert listener_state(env)[1] == {arns["a.boots.test"], arns["c.boots.test"]}
    # What Terraform made is still there, untouched.
    assert env["acm"].describe_certificate(CertificateArn=env["bootstrap"])["Certificate"]["CertificateArn"]


def test_edge_changed_queues_a_sync_per_aws_target_and_the_job_runs_it(aws_env, plans):
    env, target = aws_env, aws_env["target"]
    tenant = shop(plans, "hats")
    domain = Domain.objects.create(tenant=tenant, domain="www.hats.test", kind=Domain.Kind.CUSTOM,
                                   status=Domain.Status.ACTIVE)
    certify(domain, env["tmp"])
    # A target that manages neither certificates nor records gets no job.
    Target.objects.create(environment=Environment.objects.create(name="staging"), name="aws-staging",
                          kind=Target.Kind.AWS, aws_region=REGION)
    queue = django_rq.get_queue("default")
    queue.empty()
    django_rq.get_connection("default").delete(f"platform:aws-domains-pending:{target.pk}")
    # A burst of changes queues one sync per target while none has started.
    for _ in range(5):
        edge_changed.send(sender=None, actor=ACTOR, reason="test")
    jobs = [j for j in queue.get_jobs() if j.func_name.endswith("aws_domains_sync_job")]
    assert [j.args[0] for j in jobs] == [target.pk]
    django_rq.get_worker("default", worker_class=TenantSafeSimpleWorker).work(burst=True)
    assert set(listener_state(env)[1]) == {acm_by_domain(env)["www.hats.test"]}
    event = AuditEvent.objects.get(action="aws_domains.synced")
    assert event.actor_type == "job" and "command:pytest" in event.actor
    # Once a run has started, the next change queues the next run.
    edge_changed.send(sender=None, actor=ACTOR, reason="after")
    assert len([j for j in queue.get_jobs() if j.func_name.endswith("aws_domains_sync_job")]) == 1
    queue.empty()


def not_yet_valid(name: str) -> tuple[bytes, bytes]:
    """A self-signed certificate that starts tomorrow: ACM refuses to import it."""
    import datetime

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def test_a_certificate_acm_refuses_is_named_and_holds_up_nothing_else(aws_env, plans):
    tenant = shop(plans, "socks")
    good = Domain.objects.create(tenant=tenant, domain="good.socks.test", kind=Domain.Kind.CUSTOM,
                                 status=Domain.Status.ACTIVE)
    certify(good, aws_env["tmp"])
    bad = Domain.objects.create(tenant=tenant, domain="bad.socks.test", kind=Domain.Kind.CUSTOM,
                                status=Domain.Status.ACTIVE)
    chain, key = not_yet_valid("bad.socks.test")
    Certificate.objects.create(domain=bad, status=Certificate.Status.ISSUED, serial="bad1",
                               chain_encrypted=secret_encrypt(chain), key_encrypted=secret_encrypt(key))
    result = aws_domains_sync(target=aws_env["target"], actor=ACTOR)
    assert list(result.failed) == ["bad.socks.test"] and result.attached == ["good.socks.test"]
    assert set(acm_by_domain(aws_env)) == {"good.socks.test"}
    event = AuditEvent.objects.get(action="aws_domains.sync_failed")
    assert list(event.details["refused"]) == ["bad.socks.test"]


def test_sync_command_prints_what_it_did_and_exits_1_past_the_quota(aws_env, plans, settings):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    settings.AWS_ALB_CERTIFICATE_LIMIT = 1
    tenant = shop(plans, "caps")
    for name in ("one.caps.test", "two.caps.test"):
        certify(Domain.objects.create(tenant=tenant, domain=name, kind=Domain.Kind.CUSTOM,
                                      status=Domain.Status.ACTIVE), aws_env["tmp"])
    with pytest.raises(CommandError, match=r"1 domain\(s\) not attached.*two\.caps\.test"):
        call_command("sync_target_domains", "--env", "production")
    settings.AWS_ALB_CERTIFICATE_LIMIT = 25
    call_command("sync_target_domains", "--env", "production")  # the waiting one is attached now
    assert len(listener_state(aws_env)[1]) == 2
    with pytest.raises(CommandError, match="No environment named 'nowhere'"):
        call_command("sync_target_domains", "--env", "nowhere")
    Target.objects.filter(pk=aws_env["target"].pk).update(https_listener_arn="", hosted_zone_id="")
    with pytest.raises(CommandError, match="manages no domains: set its https_listener_arn"):
        call_command("sync_target_domains", "--env", "production")


def test_a_listener_that_does_not_exist_fails_with_what_to_check(aws_env, plans):
    target = aws_env["target"]
    target.https_listener_arn = target.https_listener_arn.replace("/listener/", "/listener/x") + "0"
    with pytest.raises(AwsDomainsError, match="Check the worker's AWS permissions .* https_listener_arn"):
        aws_domains_sync(target=target, actor=ACTOR)
    assert AuditEvent.objects.filter(action="aws_domains.sync_failed", target="aws-prod").exists()
