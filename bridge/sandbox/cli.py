"""`python -m bridge sandbox`: a local homeserver, an XMPP server and the bridge, ready to talk to.

The first run writes everything under the sandbox directory (default ./sandbox): Synapse's
config and database, Prosody's (XMPP) with a demo account, a demo contact and a demo group
chat, the bridge's config (SQLite, XMPP enabled), the registration and a demo Matrix user.
Later runs reuse all of it. Ctrl-C stops everything. Slack, Discord and Telegram stay off:
their servers cannot run locally.

Ports (chosen on the first run, kept after): --hs-port (homeserver), --as-port (the bridge:
appservice, web pages and provisioning API), --xmpp-port (Prosody's client port), --dns-port
(the DNS server with the XMPP SRV record).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import secrets
from collections.abc import Callable
from pathlib import Path

from ruamel.yaml import YAML

from ..config import ConfigError
from ..configure import load_config
from ..registration import generate_registration
from ..util.files import write_private
from .synapse import LocalSynapse, SynapseError
from .xmpp import DEMO_ROOM, DOMAIN, DemoContact, LocalProsody, XmppUnavailable

DEMO_USER = "demo"
SERVER_NAME = "localhost"


def _bridge_config(directory: Path, hs_port: int, as_port: int,
                   xmpp: LocalProsody | None) -> dict:
    networks = {} if xmpp is None else {"xmpp": {
        "enabled": True, "ca_file": str(xmpp.ca), "nameserver": xmpp.nameserver}}
    return {
        "networks": networks,
        "web": {"public_url": f"http://127.0.0.1:{as_port}"},
        "homeserver": {"address": f"http://127.0.0.1:{hs_port}", "domain": SERVER_NAME},
        "appservice": {
            "address": f"http://127.0.0.1:{as_port}", "hostname": "127.0.0.1", "port": as_port,
            "id": "relayforge", "bot_username": "relayforgebot",
        },
        "database": {"uri": f"sqlite:{directory / 'relayforge.db'}"},
        "vault": {"provider": "file", "file": {"key_path": str(directory / "master.key")}},
        "audit": {"checkpoint_file": str(directory / "audit.checkpoint")},
        "bridge": {"permissions": {"*": "relay", SERVER_NAME: "admin"}},
        "logging": {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "formatter": "plain",
                                  "filename": str(directory / "relayforge.log")}},
            "root": {"level": "INFO", "handlers": ["file"]},
        },
    }


def prepare(directory: Path, hs_port: int, as_port: int, xmpp: LocalProsody | None
            ) -> tuple[Path, Path]:
    """Write the bridge config and registration unless a previous run already did."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "config.yaml"
    registration_path = directory / "registration.yaml"
    if not config_path.exists():
        with config_path.open("w") as stream:
            YAML().dump(_bridge_config(directory.resolve(), hs_port, as_port, xmpp), stream)
    if not registration_path.exists():
        generate_registration(load_config(str(config_path), for_run=False),
                              str(registration_path))
    return config_path, registration_path


def demo_user(synapse: LocalSynapse, directory: Path) -> tuple[str, str]:
    password_file = directory / "demo-password.txt"
    mxid = f"@{DEMO_USER}:{SERVER_NAME}"
    if password_file.exists():
        return mxid, password_file.read_text().strip()
    password = secrets.token_urlsafe(12)
    synapse.register_user(DEMO_USER, password)
    write_private(password_file, password)
    return mxid, password


def _xmpp_server(directory: Path, xmpp_port: int, dns_port: int) -> LocalProsody:
    """The sandbox's Prosody, on the ports its first run chose."""
    ports_file = directory / "ports.txt"
    if ports_file.exists():
        xmpp_port, dns_port = (int(p) for p in ports_file.read_text().split())
    server = LocalProsody(directory, xmpp_port, dns_port)
    server.prepare()
    ports_file.write_text(f"{xmpp_port} {dns_port}\n")
    return server


def banner(synapse: LocalSynapse, mxid: str, password: str, as_address: str,
           directory: Path, xmpp: LocalProsody | None, xmpp_accounts: dict[str, str],
           xmpp_problem: str) -> str:
    lines = [
        "",
        "RelayForge sandbox is running.",
        f"  Homeserver: {synapse.url}   (log in with any Matrix client)",
        f"  User:       {mxid}",
        f"  Password:   {password}",
        f"  Bot:        @relayforgebot:{SERVER_NAME}  (start a DM and send: help)",
        f"  Bridge:     {as_address}   (appservice, provisioning API)",
        f"  Sign-in:    {as_address}/auth/sign-in",
    ]
    if xmpp is not None:
        demo = next(jid for jid in xmpp_accounts if jid.startswith("demo@"))
        friend = next(jid for jid in xmpp_accounts if jid.startswith("friend@"))
        lines += [
            f"  XMPP:       Prosody for {DOMAIN} on 127.0.0.1:"
            f"{xmpp.c2s_port} (SRV record from DNS on {xmpp.nameserver})",
            "",
            "See it bridge (in your DM with the bot):",
            f"  1. send:   link xmpp {demo}",
            f"  2. send the password {xmpp_accounts[demo]}  (the bot removes it at once)",
            "  3. reply:  yes",
            f"  4. send:   map xmpp {DEMO_ROOM}",
            "     accept the invite to the room; what you say there goes to XMPP as",
            f"     {demo}, and {friend} (in the group chat) answers it.",
            f"     {friend} answers direct chats too.",
        ]
    else:
        lines.append(f"  XMPP:       off ({xmpp_problem})")
    lines += [
        "  Slack, Discord, Telegram: off (their servers cannot run locally; see the README)",
        f"  Logs:       {directory / 'relayforge.log'}, {synapse.directory}",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


async def _serve(config_path: Path, ready_message: str,
                 make_contact: Callable[[], DemoContact] | None) -> None:
    from ..app import Bridge, run_until_signalled

    config = load_config(str(config_path))
    logging.config.dictConfig(dict(config["logging"]))
    # Made here: slixmpp takes the running event loop when it is created.
    contact = make_contact() if make_contact else None
    if contact is not None:
        await contact.start()
    try:
        await run_until_signalled(Bridge(config), lambda: print(ready_message, flush=True))
    finally:
        print("Stopping the bridge and the servers...", flush=True)
        if contact is not None:
            contact.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge sandbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="sandbox", help="sandbox directory (default ./sandbox)")
    parser.add_argument("--hs-port", type=int, default=8008,
                        help="homeserver port (first run; default 8008)")
    parser.add_argument("--as-port", type=int, default=29340,
                        help="bridge port: appservice, web pages, API (first run; default 29340)")
    parser.add_argument("--xmpp-port", type=int, default=29342,
                        help="Prosody's client port (first run; default 29342)")
    parser.add_argument("--dns-port", type=int, default=29353,
                        help="DNS port serving the XMPP SRV record (first run; default 29353)")
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    xmpp: LocalProsody | None = None
    xmpp_problem = ""
    try:
        xmpp = _xmpp_server(directory.resolve() / "xmpp", args.xmpp_port, args.dns_port)
    except XmppUnavailable as e:
        xmpp_problem = str(e)
    try:
        config_path, registration_path = prepare(directory, args.hs_port, args.as_port, xmpp)
        config = load_config(str(config_path))
    except ConfigError as e:
        print(f"Cannot start the sandbox: {e}")
        return 2
    if not config.get("networks.xmpp.enabled"):
        xmpp, xmpp_problem = None, xmpp_problem or "not enabled in the sandbox's config"
    hs_address = config["homeserver.address"]
    synapse = LocalSynapse(directory / "synapse", int(hs_address.rsplit(":", 1)[1]),
                           SERVER_NAME, [registration_path])
    try:
        print(f"Starting Synapse on {synapse.url} ...", flush=True)
        synapse.start()
        make_contact: Callable[[], DemoContact] | None = None
        accounts: dict[str, str] = {}
        if xmpp is not None:
            print(f"Starting Prosody on 127.0.0.1:{xmpp.c2s_port} ...", flush=True)
            xmpp.start()
            accounts = xmpp.accounts()
            friend = next(jid for jid in accounts if jid.startswith("friend@"))
            server = xmpp
            make_contact = lambda: DemoContact(friend, accounts[friend], server)  # noqa: E731
        mxid, password = demo_user(synapse, directory)
        message = banner(synapse, mxid, password, config["appservice.address"], directory,
                         xmpp, accounts, xmpp_problem)
        asyncio.run(_serve(config_path, message, make_contact))
    except (SynapseError, XmppUnavailable) as e:
        print(f"Cannot start the sandbox: {e}")
        return 1
    finally:
        if xmpp is not None:
            xmpp.stop()
        synapse.stop()
    return 0
