"""One bridge per database for a whole module of page tests: the two test OpenID providers
as sign-in methods, XMPP on the session's Prosody, and an admin (a Matrix user with a display
name) in bridge.permissions."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import attrs
import pytest
import pytest_asyncio

from bridge.app import Bridge

from .matrix import MatrixUser
from .servers import unavailable

ADMIN_NAME = "Ada Admin"


@attrs.define
class DashboardEnv:
    bridge: Bridge
    homeserver: object
    admin: MatrixUser
    users: list[MatrixUser]
    prosody: object

    @property
    def base(self) -> str:
        return self.homeserver.appservice_url  # type: ignore[attr-defined]

    @property
    def bot(self) -> str:
        return self.homeserver.bot_mxid  # type: ignore[attr-defined]

    async def user(self, prefix: str) -> MatrixUser:
        user = await MatrixUser.register(self.homeserver.synapse, prefix)  # type: ignore
        self.users.append(user)
        return user

    async def login_token(self, user: MatrixUser) -> str:
        """The token of a login link the bot sends this user (who opens their management room
        first if they have none)."""
        room = await user.open_management_room(self.bot)
        await user.send_text(room, "login-link")
        text = await user.wait_for_notice(room, self.bot, "/auth/matrix?token=")
        return text.rsplit("token=", 1)[1].strip()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def dashboard_env(db_kind, homeserver, postgres, oidc_providers, prosody,
                        tmp_path_factory) -> AsyncIterator[DashboardEnv]:
    directory = tmp_path_factory.mktemp("dashboard")
    database = None
    if db_kind == "sqlite":
        uri = f"sqlite:{directory / 'relayforge.db'}"
    else:
        if postgres.admin_dsn is None:
            unavailable("no PostgreSQL server answers and none could be started")
        database = f"relayforge_dashboard_{secrets.token_hex(6)}"
        uri = await postgres.create_database(database)
    admin = await MatrixUser.register(homeserver.synapse, "admin")
    await admin.client.set_displayname(ADMIN_NAME)
    idp, corp = oidc_providers["idp"], oidc_providers["corp"]
    generous = {"burst": 100000, "per_minute": 100000}
    config = homeserver.bridge_config(
        directory, uri, permissions={"*": "relay", "localhost": "user", admin.mxid: "admin"},
        identity={"providers": [idp.provider_config(trust_email=True, name="Google"),
                                corp.provider_config(trust_email=True, name="GitHub")]},
        extra={"security": {"rate_limits": {"web": generous}},
               # The agents' pages (the MCP endpoint's consent and the person's list).
               "mcp": {"enabled": True},
               # XMPP (the session's Prosody), to link a network from the portal's pages.
               "networks": {"xmpp": {"enabled": True, "ca_file": str(prosody.ca),
                                     "nameserver": prosody.nameserver}}})
    bridge = Bridge(config, [])
    env = DashboardEnv(bridge, homeserver, admin, [admin], prosody)
    try:
        await bridge.start()
        yield env
    finally:
        # Also after a failed start: the port is free for the next module.
        await bridge.stop()
        for user in env.users:
            await user.close()
        if database:
            await postgres.drop_database(database)
