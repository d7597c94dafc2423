"""The sandbox's own XMPP server (Debian's Prosody) and a demo contact who answers, so a
newcomer sees the bridge bridging: link the demo account, map the demo group chat, talk.

Prosody serves the XMPP domain `sandbox.test` with TLS from a throwaway CA the bridge is told to
trust; a small dnsmasq serves the SRV record that points clients at Prosody's port, so the
bridge finds the server exactly as it would a real one.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..util.files import write_private
from .local_servers import (
    ServerFailed,
    start_dnsmasq,
    stop_process,
    wait_for_port,
    write_ca_and_cert,
)

DOMAIN = "sandbox.test"
MUC = f"conference.{DOMAIN}"
DEMO_ROOM = f"demo@{MUC}"
ACCOUNTS = ("demo", "friend")  # the newcomer's XMPP account, and the contact who answers
TOOLS = ("prosody", "prosodyctl", "dnsmasq")


class XmppUnavailable(RuntimeError):
    """Prosody or dnsmasq is missing or would not start: the sandbox says so."""


class LocalProsody:
    """Prosody and its SRV record, kept in `directory` between runs (accounts included)."""

    def __init__(self, directory: Path, c2s_port: int, dns_port: int) -> None:
        self.directory = directory
        self.c2s_port = c2s_port
        self.dns_port = dns_port
        self._processes: list[subprocess.Popen] = []

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    @property
    def config(self) -> Path:
        return self.directory / "prosody.cfg.lua"

    def prepare(self) -> None:
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            raise XmppUnavailable(f"{', '.join(missing)} not installed (Debian packages "
                                  "prosody and dnsmasq-base)")
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.ca.exists():
            write_ca_and_cert(self.directory, DOMAIN, [DOMAIN, MUC], "RelayForge sandbox CA",
                              days=3650)
        (self.directory / "data").mkdir(exist_ok=True)
        cert, key = self.directory / f"{DOMAIN}.crt", self.directory / f"{DOMAIN}.key"
        root = "run_as_root = true\n" if os.geteuid() == 0 else ""
        self.config.write_text(f"""
{root}pidfile = "{self.directory / 'prosody.pid'}"
data_path = "{self.directory / 'data'}"
log = {{ info = "{self.directory / 'prosody.log'}" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.c2s_port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
modules_enabled = {{
  "roster"; "saslauth"; "tls"; "disco"; "ping"; "presence"; "message"; "iq";
  "vcard4"; "vcard_legacy"; "pep"; "carbons"; "offline";
}}
modules_disabled = {{ "s2s"; "posix"; "http" }}
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
""")

    def start(self) -> None:
        try:
            self._processes.append(start_dnsmasq(self.directory, self.dns_port, [
                f"--srv-host=_xmpp-client._tcp.{DOMAIN},{DOMAIN},{self.c2s_port},0,5",
                f"--host-record={DOMAIN},127.0.0.1", f"--host-record={MUC},127.0.0.1"]))
            log = self.directory / "prosody-stdout.log"
            prosody = subprocess.Popen(["prosody", "-F", "--config", str(self.config)],
                                       stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                       start_new_session=True)
            self._processes.append(prosody)
            wait_for_port(self.c2s_port, prosody, "Prosody", self.directory / "prosody.log")
        except ServerFailed as e:
            raise XmppUnavailable(str(e).split("\n", 1)[0]) from e

    def accounts(self) -> dict[str, str]:
        """The demo accounts' JIDs and passwords, registered on the first run."""
        passwords = self.directory / "passwords.txt"
        if passwords.exists():
            pairs = (line.split(" ", 1) for line in passwords.read_text().splitlines() if line)
            return dict(pairs)
        accounts = {}
        for name in ACCOUNTS:
            password = secrets.token_urlsafe(9)
            subprocess.run(["prosodyctl", "--config", str(self.config), "register", name,
                            DOMAIN, password], check=True, capture_output=True)
            accounts[f"{name}@{DOMAIN}"] = password
        write_private(passwords, "".join(f"{jid} {pw}\n" for jid, pw in accounts.items()))
        return accounts

    def stop(self) -> None:
        for process in reversed(self._processes):
            stop_process(process)
        self._processes.clear()


class DemoContact:
    """`friend@sandbox.test`: sits in the demo group chat and answers what it hears, in the
    group chat and in a direct chat, so both directions can be seen at once."""

    def __init__(self, jid: str, password: str, server: LocalProsody) -> None:
        from ..networks.xmpp.client import XmppClient

        self.jid = jid
        self.client: Any = XmppClient(f"{jid}/sandbox", password, ca_file=str(server.ca),
                                      nameserver=server.nameserver)
        self.client.add_event_handler("message", self._on_chat)
        self.client.add_event_handler("groupchat_message", self._on_groupchat)

    async def start(self) -> None:
        started = asyncio.Event()
        self.client.add_event_handler("session_start", lambda _: started.set())
        self.client.connect()
        async with asyncio.timeout(60):
            await started.wait()
        self.client.send_presence()
        await self.client.plugin["xep_0045"].join_muc_wait(DEMO_ROOM, "friend", maxstanzas=0,
                                                          timeout=60)

    def _on_chat(self, msg: Any) -> None:
        if msg["type"] in ("chat", "normal") and msg["body"]:
            msg.reply(f"friend heard you: {msg['body']}").send()

    def _on_groupchat(self, msg: Any) -> None:
        if msg["mucnick"] != "friend" and msg["body"] and not msg["body"].startswith("friend"):
            self.client.send_message(mto=DEMO_ROOM, mtype="groupchat",
                                     mbody=f"friend heard {msg['mucnick']}: {msg['body']}")

    def stop(self) -> None:
        self.client.disconnect()
