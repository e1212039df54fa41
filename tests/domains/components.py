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
        self._log_file = open(log, "wb")  # closed in stop()
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
            [
                _require("pebble-challtestsrv"),
                "-defaultIPv4",
                "",
                "-defaultIPv6",
                "",
                "-dns01",
                f"127.0.0.1:{self.dns_port}",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                f"127.0.0.1:{self.mgmt_port}",
            ],
            folder / "challtestsrv.log",
        )
        wait_for(
            lambda: requests.post(self._url("clear-txt"), json={"host": "probe."}, timeout=1).ok,
            "pebble-challtestsrv",
        )

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
        self._post(
            "add-caa",
            host=self._fqdn(host),
            policies=[{"tag": "issue", "value": issuer} for issuer in issuers],
        )

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


def make_tls_files(folder: Path, hostnames: list[str]) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ``hostnames`` (and 127.0.0.1): (ca, cert, key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "platform test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(h) for h in hostnames] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


class Pebble:
    """Let's Encrypt's test CA. HTTP-01 validation connects to ``http_port`` on the address the
    test DNS server gives for the domain (127.0.0.1)."""

    def __init__(self, folder: Path, dns: ChallTestSrv, http_port: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.ca_bundle, cert, key = make_tls_files(folder / "tls", ["localhost"])
        self.port, self.mgmt_port = free_port(), free_port()
        config = folder / "pebble.json"
        config.write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"127.0.0.1:{self.port}",
                        "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
                        "certificate": str(cert),
                        "privateKey": str(key),
                        "httpPort": http_port,
                        "tlsPort": free_port(),
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                    }
                }
            )
        )
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        self.process = Process(
            [_require("pebble"), "-config", str(config), "-dnsserver", dns.nameserver],
            folder / "pebble.log",
            env=env,
        )
        wait_for(lambda: requests.get(self.directory_url, verify=str(self.ca_bundle), timeout=1).ok, "pebble")

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def root_pem(self) -> bytes:
        """Pebble's issuing root (it changes on every start)."""
        response = requests.get(
            f"https://127.0.0.1:{self.mgmt_port}/roots/0", verify=str(self.ca_bundle), timeout=5
        )
        response.raise_for_status()
        return response.content

    def log(self) -> str:
        return self.process.log.read_text(errors="replace")

    def stop(self) -> None:
        self.process.stop()


class Nginx:
    """The real edge: nginx run from its own prefix folder, configured by tenants.domains.edge."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.process: Process | None = None

    def start(self) -> None:
        conf = self.folder / "nginx.conf"
        self.process = Process(
            [_require("nginx"), "-p", str(self.folder), "-c", str(conf), "-g", "daemon off;"],
            self.folder / "nginx.stdout.log",
        )
        wait_for(lambda: (self.folder / "nginx.pid").exists(), "nginx")

    def worker_users(self) -> set[str]:
        master = self.process.proc.pid
        out = subprocess.run(["ps", "-o", "user=", "--ppid", str(master)], capture_output=True, text=True)
        return set(out.stdout.split())

    def memory_kb(self) -> int:
        """Resident memory of master and workers together."""
        master = self.process.proc.pid
        out = subprocess.run(["ps", "-o", "rss=", "--pid", str(master), "--ppid", str(master)],
                             capture_output=True, text=True)
        return sum(int(x) for x in out.stdout.split())

    def stop(self) -> None:
        if self.process:
            self.process.stop()
