"""Shared fixtures: one real Synapse and one PostgreSQL per session; fresh users, rooms and
databases per test."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from bridge.app import Bridge
from bridge.config import Config
from bridge.configure import load_config
from bridge.networks.base import Connector
from bridge.registration import generate_double_puppet_registration
from bridge.sandbox.synapse import LocalSynapse, SynapseError, free_port

from .support.hsm import SoftHsmToken, create_token
from .support.loopback import LoopbackConnector
from .support.matrix import MatrixUser
from .support.oidc import OidcProvider, start_provider
from .support.prosody import ProsodyServer, start_prosody
from .support.servers import PostgresServer, unavailable
from .support.web import UNLIMITED_WEB, Browser
from .support.xmpp import XmppPeer

SERVER_NAME = "localhost"
DEFAULT_PERMISSIONS = {"*": "relay", SERVER_NAME: "user"}


class SessionHomeserver:
    """The session's Synapse, and the bridge config its registration was generated from."""

    def __init__(self, synapse: LocalSynapse, config_path: Path, registration_path: Path
                 ) -> None:
        self.synapse = synapse
        self.config_path = config_path
        self.registration_path = registration_path
        self.base = YAML(typ="safe").load(config_path.read_text())

    @property
    def bot_mxid(self) -> str:
        return f"@{self.base['appservice']['bot_username']}:{SERVER_NAME}"

    @property
    def appservice_url(self) -> str:
        return self.base["appservice"]["address"]

    @property
    def hs_token(self) -> str:
        return self.base["appservice"]["hs_token"]

    def bridge_config(self, directory: Path, db_uri: str,
                      permissions: dict[str, str] | None = None,
                      audit: dict[str, Any] | None = None,
                      identity: dict[str, Any] | None = None,
                      extra: dict[str, Any] | None = None) -> Config:
        data = {**self.base, "database": {"uri": db_uri},
                # Encryption off unless a test turns it on: each bridge that has it makes an
                # encryption device for the bot user all tests share.
                "bridge": {"permissions": permissions or DEFAULT_PERMISSIONS,
                           "encryption": {"allow": False}},
                "vault": {"file": {"key_path": str(directory / "master.key")}},
                "audit": {"checkpoint_file": str(directory / "audit.checkpoint"),
                          **(audit or {})},
                "identity": identity or {}}
        for section, values in (extra or {}).items():
            # Sections merge one level deep, so a test adds a network without losing others.
            if isinstance(values, dict) and isinstance(data.get(section), dict):
                data[section] = {**data[section], **values}
            else:
                data[section] = values
        path = directory / f"config-{secrets.token_hex(3)}.yaml"
        with path.open("w") as stream:
            YAML().dump(data, stream)
        return load_config(str(path))


def write_base_config(directory: Path, hs_port: int, as_port: int) -> Path:
    config = {
        "homeserver": {"address": f"http://127.0.0.1:{hs_port}", "domain": SERVER_NAME},
        "appservice": {"address": f"http://127.0.0.1:{as_port}", "hostname": "127.0.0.1",
                       "port": as_port, "id": "relayforge-test", "bot_username": "rfbot"},
        "bridge": {"permissions": DEFAULT_PERMISSIONS},
        # The test-only network's ghosts must be inside the registration's namespaces too.
        "networks": {"loopback": {"username_template": "loopback_{id}",
                                  "displayname_template": "{displayname} (Loopback)"}},
    }
    path = directory / "config.yaml"
    with path.open("w") as stream:
        YAML().dump(config, stream)
    return path


@pytest.fixture(scope="session")
def homeserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionHomeserver]:
    try:
        import synapse
    except ImportError:
        unavailable("Synapse is not installed (install the project's 'test' extra)")
    directory = tmp_path_factory.mktemp("homeserver")
    config_path = write_base_config(directory, free_port(), free_port())
    registration_path = directory / "registration.yaml"
    # The registration the real Synapse loads is the one `-g` writes.
    subprocess.run([sys.executable, "-m", "bridge", "-c", str(config_path), "-g",
                    "-r", str(registration_path)], check=True, capture_output=True)
    # Double puppeting's second registration (url: null, a non-exclusive namespace), its
    # secret in the base config's double_puppet.secrets: unused until a test enables the
    # Matrix network, so other tests see no difference.
    double_puppet_path = directory / "registration-double-puppet.yaml"
    generate_double_puppet_registration(load_config(str(config_path), for_run=False),
                                        str(double_puppet_path))
    hs_port = int(YAML(typ="safe").load(config_path.read_text())["homeserver"]["address"]
                  .rsplit(":", 1)[1])
    synapse = LocalSynapse(directory / "synapse", hs_port, SERVER_NAME,
                           [registration_path, double_puppet_path])
    try:
        synapse.start()
    except SynapseError as e:
        unavailable(f"Synapse did not start: {e}")
    yield SessionHomeserver(synapse, config_path, registration_path)
    synapse.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
async def db_uri(request: pytest.FixtureRequest, tmp_path: Path,
                 postgres: PostgresServer) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path / 'relayforge.db'}"
        return
    if postgres.admin_dsn is None:
        unavailable("no PostgreSQL server answers and none could be started")
    name = f"relayforge_test_{secrets.token_hex(6)}"
    uri = await postgres.create_database(name)
    yield uri
    await postgres.drop_database(name)


@pytest.fixture(scope="session")
def oidc_providers(homeserver: SessionHomeserver) -> Iterator[dict[str, OidcProvider]]:
    """Two independent OpenID providers, for linking across providers and issuer mix-ups."""
    providers = {}
    try:
        for provider_id in ("idp", "corp"):
            providers[provider_id] = start_provider(
                provider_id, f"{homeserver.appservice_url}/oauth/{provider_id}/callback")
        yield providers
    finally:
        for provider in providers.values():
            provider.stop()


@pytest.fixture(scope="session")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProsodyServer]:
    server = start_prosody(tmp_path_factory.mktemp("prosody"))
    yield server
    server.shutdown()


@pytest.fixture
async def xmpp_bridge(start_bridge: BridgeFactory, prosody: ProsodyServer) -> Bridge:
    return await start_bridge(extra=xmpp_extra(prosody))


def xmpp_extra(prosody: ProsodyServer) -> dict[str, Any]:
    """The bridge config's XMPP part for the test Prosody."""
    return {"networks": {"xmpp": {
        "enabled": True, "ca_file": str(prosody.ca), "nameserver": prosody.nameserver}},
        # Prosody's upload service listens on loopback here: the admin names it, as one
        # would an in-house upload server (internal addresses are refused otherwise).
        "media": {"trusted_hosts": [f"127.0.0.1:{prosody.http_port}"]}}


@pytest.fixture
async def xmpp_peer(prosody: ProsodyServer) -> AsyncIterator[Callable[[str], Any]]:
    peers: list[XmppPeer] = []

    async def make(name: str = "peer") -> XmppPeer:
        peer = XmppPeer(prosody, name)
        await peer.start()
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        await peer.stop()


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsmToken:
    return create_token(tmp_path_factory.mktemp("softhsm"))


BridgeFactory = Callable[..., Awaitable[Bridge]]


@pytest.fixture
async def start_bridge(homeserver: SessionHomeserver, db_uri: str, tmp_path: Path
                       ) -> AsyncIterator[BridgeFactory]:
    """Start a bridge on this test's database; can be called again to restart it."""
    running: list[Bridge] = []

    async def start(connectors: list[Connector] | None = None,
                    permissions: dict[str, str] | None = None,
                    audit: dict[str, Any] | None = None,
                    identity: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> Bridge:
        config = homeserver.bridge_config(tmp_path, db_uri, permissions, audit, identity,
                                          extra)
        bridge = Bridge(config, [LoopbackConnector()] if connectors is None else connectors)
        running.append(bridge)
        await bridge.start()
        # Connectors start in the background; tests drive the networks right away.
        await bridge.connectors_started()
        return bridge

    yield start
    for bridge in reversed(running):
        await bridge.stop()


@pytest.fixture
async def bridge(start_bridge: BridgeFactory) -> Bridge:
    return await start_bridge()


@pytest.fixture
def loopback(bridge: Bridge) -> LoopbackConnector:
    connector = bridge.connectors["loopback"]
    assert isinstance(connector, LoopbackConnector)
    return connector


@pytest.fixture
async def new_user(homeserver: SessionHomeserver) -> AsyncIterator[Callable[..., Any]]:
    users: list[MatrixUser] = []

    async def make(prefix: str = "user") -> MatrixUser:
        user = await MatrixUser.register(homeserver.synapse, prefix)
        users.append(user)
        return user

    yield make
    for user in users:
        await user.close()


@pytest.fixture
async def signin_bridge(start_bridge: BridgeFactory, oidc_providers: dict[str, OidcProvider]
                        ) -> Bridge:
    """A bridge whose sign-in providers are the two test OpenID providers."""
    idp, corp = oidc_providers["idp"], oidc_providers["corp"]
    # The sign-in tests (the enumeration test makes 200 callbacks) are not tests of the limits.
    return await start_bridge(identity={"providers": [
        idp.provider_config(trust_email=True, name="Google"),
        corp.provider_config(trust_email=True, name="GitHub"),
    ]}, extra={"security": UNLIMITED_WEB})


@pytest.fixture
async def browser(homeserver: SessionHomeserver) -> AsyncIterator[Callable[[], Browser]]:
    """Make browsers (each with its own cookies) for the web flows."""
    browsers: list[Browser] = []

    def make() -> Browser:
        browsers.append(Browser(homeserver.appservice_url))
        return browsers[-1]

    yield make
    for made in browsers:
        await made.close()
