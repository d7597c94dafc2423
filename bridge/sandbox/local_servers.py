"""Pieces for running local servers beside the bridge: a throwaway CA and server certificate,
waiting for a port, a dnsmasq serving records, stopping a process. Used by the sandbox's XMPP
server and by the tests' Prosody servers alike."""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..util.files import write_private


class ServerFailed(RuntimeError):
    """A local server did not start; the message says where its log is."""


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def write_ca_and_cert(directory: Path, domain: str, names: list[str], ca_name: str,
                      days: int) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed for `names`: (ca.pem, DOMAIN.crt, DOMAIN.key),
    the key readable by its owner only."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name(ca_name))
          .issuer_name(_name(ca_name)).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(domain)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = (directory / "ca.pem", directory / f"{domain}.crt",
                                    directory / f"{domain}.key")
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()).decode())
    return ca_path, cert_path, key_path


def wait_for_port(port: int, process: subprocess.Popen, what: str, log: Path,
                  seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise ServerFailed(f"{what} exited at start-up (see {log}):\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerFailed(f"{what} did not listen on port {port} (see {log})")


def start_dnsmasq(directory: Path, port: int, records: list[str]) -> subprocess.Popen:
    """dnsmasq on 127.0.0.1:`port` answering only `records` (--srv-host=..., --host-record=...)."""
    log = directory / "dnsmasq.log"
    process = subprocess.Popen(
        ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
         f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
         "--pid-file=", "--user=root" if os.geteuid() == 0 else "--user=nobody",
         *records, f"--log-facility={log}"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    time.sleep(0.3)
    if process.poll() is not None:
        raise ServerFailed(f"dnsmasq exited at start-up (see {log})")
    return process


def stop_process(process: subprocess.Popen | None, timeout: float = 15) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
