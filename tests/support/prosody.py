"""A real Prosody with TLS (a throwaway CA), and dnsmasq serving its SRV records.

The XMPP domain is `rf.test`; clients find the server only through `_xmpp-client._tcp.rf.test`
on the local dnsmasq, so every test exercises SRV discovery and certificate checks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import attrs

from bridge.sandbox.local_servers import (
    start_dnsmasq,
    stop_process,
    wait_for_port,
    write_ca_and_cert,
)
from bridge.sandbox.synapse import free_port

from .servers import unavailable

DOMAIN = "rf.test"
MUC = f"conference.{DOMAIN}"
HOST = f"xmpp.{DOMAIN}"


def make_ca_and_cert(directory: Path, names: list[str] | None = None
                     ) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for the domain, the MUC and upload hosts
    (or for `names`)."""
    return write_ca_and_cert(directory, DOMAIN, names or [DOMAIN, MUC, HOST, f"upload.{DOMAIN}"],
                             "RelayForge test CA", days=30)


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
  "vcard4"; "vcard_legacy"; "pep"; "carbons"; "http"; "offline"; "mam";
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
        wait_for_port(self.c2s_port, self.prosody, "Prosody", self.directory / "prosody.log")

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        stop_process(self.prosody)

    def start_dns(self) -> None:
        self.dnsmasq = start_dnsmasq(self.directory, self.dns_port, [
            f"--srv-host=_xmpp-client._tcp.{DOMAIN},{HOST},{self.c2s_port},0,5",
            f"--host-record={HOST},127.0.0.1", f"--host-record={DOMAIN},127.0.0.1",
            f"--host-record={MUC},127.0.0.1", f"--host-record=upload.{DOMAIN},127.0.0.1"])

    def register(self, user: str, password: str) -> str:
        subprocess.run(["prosodyctl", "--config", str(self.config), "register", user, DOMAIN,
                        password], check=True, capture_output=True)
        return f"{user}@{DOMAIN}"

    def shutdown(self) -> None:
        self.stop()
        stop_process(self.dnsmasq, timeout=10)


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
