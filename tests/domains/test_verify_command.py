"""`manage.py verify_domains` and the scheduled RQ job, run for real."""

import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tenants.domains import services as domains
from tenants.models import Domain
from tests.conftest import BASE_DIR, TEST_ACTOR, subprocess_env
from tests.domains.test_verification import shop


def test_verify_one_domain(plans, domain_settings, dns_server, capsys):
    tenant = shop(plans, "cmd")
    domain = domains.domain_add(tenant=tenant, domain="cmd-one.example", actor=TEST_ACTOR)
    with pytest.raises(CommandError, match="cmd-one.example is not verified yet"):
        call_command("verify_domains", "--domain", "CMD-ONE.example.")
    assert "TXT record _platform-verify.cmd-one.example is missing" in capsys.readouterr().out
    dns_server.set_txt("_platform-verify.cmd-one.example", domain.verification_token)
    dns_server.set_cname("cmd-one.example", "cmd.platform.test")
    call_command("verify_domains", "--domain", "cmd-one.example")
    assert "is verified" in capsys.readouterr().out
    with pytest.raises(CommandError, match="No custom domain 'nope.example'"):
        call_command("verify_domains", "--domain", "nope.example")
    with pytest.raises(CommandError, match="looks like a URL"):
        call_command("verify_domains", "--domain", "http://x.example/")


@pytest.mark.django_db(transaction=True)
def test_scheduled_job_checks_due_domains_in_a_real_worker(plans, domain_settings, dns_server):
    tenant = shop(plans, "cron")
    domain = domains.domain_add(tenant=tenant, domain="cron-job.example", actor=TEST_ACTOR)
    Domain.objects.filter(pk=domain.pk).update(next_check_at=domain.created_at)
    import django_rq

    django_rq.get_queue("default").enqueue("tenants.domains.jobs.verify_due_domains_job")
    result = subprocess.run(
        [sys.executable, "manage.py", "rqworker", "default", "--burst"], cwd=BASE_DIR,
        env=subprocess_env(CUSTOM_DOMAIN_DNS_NAMESERVERS=dns_server.nameserver,
                           PLATFORM_BASE_DOMAIN="platform.test"),
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    domain.refresh_from_db()
    assert domain.status == Domain.Status.VERIFICATION_FAILED
    assert "TXT record _platform-verify.cron-job.example is missing" in domain.status_reason
    assert domain.check_attempts == 1
