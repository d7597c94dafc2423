"""A second real Prosody for connection set-up: several XMPP domains behind awkward DNS.

TLS 1.2 only, so Prosody 0.12 offers SCRAM-SHA-1-PLUS (its tls-unique channel binding does
not exist on TLS 1.3). Its own dnsmasq serves:
- `tls.test`: a well-run server (SRV -> a host with an A record);
- `dual.test`: SRV -> a host whose AAAA record is ::1, where nothing listens, and whose A
  record is 127.0.0.1, where Prosody does;
- `fallback.test`: SRV lists a dead target first (priority 0), then the live one;
- `wrong.test`: a real virtual host that presents the certificate of the others.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import attrs

from bridge.sandbox.local_servers import start_dnsmasq, stop_process, wait_for_port
from bridge.sandbox.synapse import free_port

from .prosody import make_ca_and_cert
from .servers import unavailable

GOOD = "tls.test"
DUAL = "dual.test"
FALLBACK = "fallback.test"
WRONG = "wrong.test"


@attrs.define
class HostsServer:
    directory: Path
    ca: Path
    c2s_port: int
    dead_port: int
    dns_port: int
    prosody: subprocess.Popen | None = None
    dnsmasq: subprocess.Popen | None = None

    @property
    def config(self) -> Path:
        return self.directory / "prosody.cfg.lua"

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    @property
    def log(self) -> Path:
        return self.directory / "prosody.log"

    def write_config(self, cert: Path, key: Path) -> None:
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        root = "run_as_root = true\n" if os.geteuid() == 0 else ""
        tls = f'ssl = {{ certificate = "{cert}"; key = "{key}"; protocol = "tlsv1_2" }}'
        hosts = "".join(f'VirtualHost "{host}"\n  {tls}\n'
                        for host in (GOOD, DUAL, FALLBACK, WRONG))
        self.config.write_text(f"""
{root}pidfile = "{self.directory / 'prosody.pid'}"
data_path = "{data}"
log = {{ debug = "{self.log}" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.c2s_port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping"; "presence"; "message"; "iq" }}
modules_disabled = {{ "s2s"; "posix" }}
c2s_require_encryption = true
allow_registration = false
authentication = "internal_hashed"
certificates = "{self.directory}"
{tls}
{hosts}""")

    def start(self) -> None:
        out = self.directory / "prosody-stdout.log"
        self.prosody = subprocess.Popen(["prosody", "-F", "--config", str(self.config)],
                                        stdout=out.open("ab"), stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_for_port(self.c2s_port, self.prosody, "Prosody", self.log)

    def start_dns(self) -> None:
        live = self.c2s_port
        records = [
            f"--srv-host=_xmpp-client._tcp.{GOOD},xmpp.{GOOD},{live},0,5",
            f"--host-record=xmpp.{GOOD},127.0.0.1",
            f"--srv-host=_xmpp-client._tcp.{DUAL},both.{DUAL},{live},0,5",
            f"--host-record=both.{DUAL},127.0.0.1,::1",
            f"--srv-host=_xmpp-client._tcp.{FALLBACK},dead.{FALLBACK},{self.dead_port},0,5",
            f"--srv-host=_xmpp-client._tcp.{FALLBACK},live.{FALLBACK},{live},10,5",
            f"--host-record=dead.{FALLBACK},127.0.0.1",
            f"--host-record=live.{FALLBACK},127.0.0.1",
            f"--srv-host=_xmpp-client._tcp.{WRONG},xmpp.{GOOD},{live},0,5",
        ]
        self.dnsmasq = start_dnsmasq(self.directory, self.dns_port, records)

    def register(self, user: str, domain: str, password: str) -> str:
        subprocess.run(["prosodyctl", "--config", str(self.config), "register", user, domain,
                        password], check=True, capture_output=True)
        return f"{user}@{domain}"

    def shutdown(self) -> None:
        stop_process(self.prosody)
        stop_process(self.dnsmasq, timeout=10)


def start_hosts_server(directory: Path) -> HostsServer:
    for tool in ("prosody", "prosodyctl", "dnsmasq"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (Debian packages prosody and dnsmasq-base)")
    # One certificate for every domain but `wrong.test`, which presents it all the same.
    ca, cert, key = make_ca_and_cert(directory, [GOOD, f"xmpp.{GOOD}", DUAL, FALLBACK])
    # Nothing listens on the dead target's port: a free port, left unused.
    server = HostsServer(directory, ca, free_port(), free_port(), free_port())
    server.write_config(cert, key)
    server.start_dns()
    server.start()
    return server
