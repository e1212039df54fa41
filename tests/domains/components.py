"""Real servers for the custom-domain tests: pebble-challtestsrv (DNS), Pebble (ACME), nginx.

Each starts on private loopback ports under a temp folder and is stopped by its fixture. A
missing binary fails the test (install with scripts/setup); nothing here is mocked.
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import requests

from platform_site.devservices import free_port, wait_for


def _require(binary: str) -> str:
    found = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if not found:
        raise RuntimeError(f"{binary} is not installed: run scripts/setup (Debian package list).")
    return found


class Process:
    def __init__(self, cmd: list[str], log: Path, env: dict | None = None):
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log_file.close()


class ChallTestSrv:
    """An authoritative test DNS server; records are set through its management API."""

    def __init__(self, folder: Path):
        self.dns_port, self.mgmt_port = free_port(), free_port()
        self.process = Process(
            [_require("pebble-challtestsrv"), "-defaultIPv4", "", "-defaultIPv6", "",
             "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", f"127.0.0.1:{self.mgmt_port}"],
            folder / "challtestsrv.log",
        )
        wait_for(lambda: requests.post(self._url("clear-txt"), json={"host": "probe."}, timeout=1).ok,
                 "pebble-challtestsrv")

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    def _url(self, endpoint: str) -> str:
        return f"http://127.0.0.1:{self.mgmt_port}/{endpoint}"

    def _post(self, endpoint: str, **payload) -> None:
        response = requests.post(self._url(endpoint), data=json.dumps(payload), timeout=5)
        response.raise_for_status()

    @staticmethod
    def _fqdn(host: str) -> str:
        return host.rstrip(".") + "."

    def set_txt(self, host: str, value: str) -> None:
        self._post("set-txt", host=self._fqdn(host), value=value)

    def clear_txt(self, host: str) -> None:
        self._post("clear-txt", host=self._fqdn(host))

    def add_a(self, host: str, *addresses: str) -> None:
        self._post("add-a", host=self._fqdn(host), addresses=list(addresses))

    def clear_a(self, host: str) -> None:
        self._post("clear-a", host=self._fqdn(host))

    def add_aaaa(self, host: str, *addresses: str) -> None:
        self._post("add-aaaa", host=self._fqdn(host), addresses=list(addresses))

    def set_cname(self, host: str, target: str) -> None:
        self._post("set-cname", host=self._fqdn(host), target=self._fqdn(target))

    def clear_cname(self, host: str) -> None:
        self._post("clear-cname", host=self._fqdn(host))

    def add_caa(self, host: str, *issuers: str) -> None:
        self._post("add-caa", host=self._fqdn(host),
                   policies=[{"tag": "issue", "value": issuer} for issuer in issuers])

    def clear_caa(self, host: str) -> None:
        self._post("clear-caa", host=self._fqdn(host))

    def stop(self) -> None:
        self.process.stop()


def wait_until(check, what: str, timeout: float = 30.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
