"""A real Prosody with TLS (a throwaway CA), and dnsmasq serving its SRV records.

The XMPP domain is `rf.test`; clients find the server only through `_xmpp-client._tcp.rf.test`
on the local dnsmasq, so every test exercises SRV discovery and certificate checks.
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge.sandbox.synapse import free_port

from .servers import unavailable

DOMAIN = "rf.test"
MUC = f"conference.{DOMAIN}"
HOST = f"xmpp.{DOMAIN}"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca_and_cert(directory: Path, names: list[str] | None = None
                     ) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for the domain, the MUC and upload hosts
    (or for `names`)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("RelayForge test CA"))
          .issuer_name(_name("RelayForge test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = names or [DOMAIN, MUC, HOST, f"upload.{DOMAIN}"]
    cert = (x509.CertificateBuilder().subject_name(_name(DOMAIN)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = (directory / "ca.pem", directory / f"{DOMAIN}.crt",
                                    directory / f"{DOMAIN}.key")
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


def _wait_port(port: int, process: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start-up:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


@attrs.define
class ProsodyServer:
    directory: Path
    ca: Path
    c2s_port: int
    http_port: int
    dns_port: int
    prosody: subprocess.Popen | None = None
    dnsmasq: subprocess.Popen | None = None

    @property
    def config(self) -> Path:
        return self.directory / "prosody.cfg.lua"

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    def write_config(self, cert: Path, key: Path) -> None:
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        root = "run_as_root = true\n" if os.geteuid() == 0 else ""
        self.config.write_text(f"""
{root}pidfile = "{self.directory / 'prosody.pid'}"
data_path = "{data}"
log = {{ debug = "{self.directory / 'prosody.log'}" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.c2s_port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
http_ports = {{ {self.http_port} }}
http_interfaces = {{ "127.0.0.1" }}
https_ports = {{ }}
http_default_host = "upload.{DOMAIN}"
http_external_url = "http://127.0.0.1:{self.http_port}/"
modules_enabled = {{
  "roster"; "saslauth"; "tls"; "disco"; "ping"; "presence"; "message"; "iq"; "register";
  "vcard4"; "vcard_legacy"; "pep"; "carbons"; "http"; "offline";
}}
modules_disabled = {{ "s2s"; "posix" }}
c2s_require_encryption = true
allow_registration = false
authentication = "internal_hashed"
certificates = "{self.directory}"
ssl = {{ certificate = "{cert}"; key = "{key}" }}
VirtualHost "{DOMAIN}"
  ssl = {{ certificate = "{cert}"; key = "{key}" }}
Component "{MUC}" "muc"
  modules_enabled = {{ "muc_mam" }}
  muc_room_locking = false
  muc_room_default_public = true
  muc_room_default_persistent = true
Component "upload.{DOMAIN}" "http_file_share"
  http_file_share_size_limit = 10485760
""")

    def start(self) -> None:
        log = self.directory / "prosody-stdout.log"
        self.prosody = subprocess.Popen(["prosody", "-F", "--config", str(self.config)],
                                        stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                        start_new_session=True)
        _wait_port(self.c2s_port, self.prosody, "Prosody", self.directory / "prosody.log")

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.prosody and self.prosody.poll() is None:
            self.prosody.send_signal(signal.SIGTERM)
            try:
                self.prosody.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.prosody.kill()
                self.prosody.wait()

    def start_dns(self) -> None:
        log = self.directory / "dnsmasq.log"
        self.dnsmasq = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
             f"--port={self.dns_port}", "--listen-address=127.0.0.1", "--bind-interfaces",
             "--pid-file=", "--user=root" if os.geteuid() == 0 else "--user=nobody",
             f"--srv-host=_xmpp-client._tcp.{DOMAIN},{HOST},{self.c2s_port},0,5",
             f"--host-record={HOST},127.0.0.1", f"--host-record={DOMAIN},127.0.0.1",
             f"--host-record={MUC},127.0.0.1", f"--host-record=upload.{DOMAIN},127.0.0.1",
             f"--log-facility={log}"],
            stdout=log.open("ab"), stderr=subprocess.STDOUT)
        time.sleep(0.3)
        if self.dnsmasq.poll() is not None:
            raise RuntimeError(f"dnsmasq exited: {log.read_text()[-1000:]}")

    def register(self, user: str, password: str) -> str:
        subprocess.run(["prosodyctl", "--config", str(self.config), "register", user, DOMAIN,
                        password], check=True, capture_output=True)
        return f"{user}@{DOMAIN}"

    def shutdown(self) -> None:
        self.stop()
        if self.dnsmasq and self.dnsmasq.poll() is None:
            self.dnsmasq.terminate()
            self.dnsmasq.wait(timeout=10)


def start_prosody(directory: Path) -> ProsodyServer:
    for tool in ("prosody", "prosodyctl", "dnsmasq"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (Debian packages prosody and dnsmasq-base)")
    ca, cert, key = make_ca_and_cert(directory)
    server = ProsodyServer(directory, ca, free_port(), free_port(), free_port())
    server.write_config(cert, key)
    server.start_dns()
    server.start()
    return server
