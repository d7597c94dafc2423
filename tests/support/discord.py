"""Discord for end-to-end tests: a world in the fake (a server with people, a text channel
and a forum), the bridge's `networks.discord` section pointed at it, and linking the way a
person does (the bot's link, the bridge's start page, Discord's authorisation page, back to
the bridge, consent)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import pytest_asyncio

from bridge.app import Bridge
from tests.fakes.discord import FORUM, Channel, FakeDiscord, Guild, User

from .matrix import MatrixUser
from .servers import unavailable
from .slack import browser_session, open_in_browser, open_start_link, start_link

# A tiny PNG, as people's profile pictures.
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18"
       b"\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")


@attrs.define
class World:
    alice: User
    bob: User
    carol: User
    guild: Guild
    general: Channel
    random: Channel
    forum: Channel


def build_world(discord: FakeDiscord) -> World:
    alice = discord.add_user("alice", "Alice Liddell", avatar=PNG)
    bob = discord.add_user("bob", "Bobby")
    carol = discord.add_user("carol", "Carol")
    guild = discord.add_guild("Acme", bob, [alice, carol])
    return World(alice, bob, carol, guild, discord.add_channel(guild, "general"),
                 discord.add_channel(guild, "random"),
                 discord.add_channel(guild, "help", FORUM))


def contents(discord: FakeDiscord, channel: Channel) -> list[str]:
    """What the channel says now, oldest first."""
    return [m.content for m in discord.messages(channel)]


def discord_settings(discord: FakeDiscord, callback: str, **extra: Any) -> dict[str, Any]:
    """The bridge's `networks.discord` section, pointed at the fake; the application accepts
    exactly the bridge's callback URL."""
    discord.app.redirect_uris = [callback]
    return {"enabled": True, "bot_token": discord.app.bot_token,
            "client_id": discord.app.client_id, "client_secret": discord.app.client_secret,
            "api_url": discord.api_url, "gateway_url": discord.gateway_url,
            "oauth_url": discord.authorize_endpoint, "cdn_url": discord.url,
            "guild_ready_timeout": 0.05, "grant_check_seconds": 0, "max_refusals": 3,
            **extra}


async def authorise(discord: FakeDiscord, person: User, url: str) -> tuple[int, str]:
    """In a fresh browser: open the bridge's start link, sign in at Discord as `person`,
    authorise, and follow the redirect back to the bridge."""
    discord.sign_in(person)
    async with browser_session() as http:
        _, authorize = await open_start_link(http, url)
        status, _, location = await open_in_browser(authorize)
        assert status == 302 and location, f"Discord's page answered {status}"
        async with http.get(location, allow_redirects=False) as r:
            return r.status, await r.text()


async def link_discord(user: MatrixUser, bot: str, discord: FakeDiscord, person: User,
                       profile: str = "Jobb", command: str | None = None,
                       room: str | None = None) -> str:
    """The whole link (or, with `command`, a relink); returns the management room."""
    room = room or await user.open_management_room(bot)
    url = await start_link(user, bot, room, profile,
                           command=command or f"link discord --profile {profile}")
    status, page = await authorise(discord, person, url)
    assert status == 200, page
    await user.wait_for_notice(room, bot, "Reply yes to link")
    await user.send_text(room, "yes")
    await user.wait_for_notice(room, bot, "Linked discord:" if command is None else "discord")
    return room


@attrs.define
class Env:
    discord: FakeDiscord
    world: World
    bridge: Bridge
    alice: MatrixUser
    room: str
    bot: str
    consent: str
    homeserver: object
    users: list[MatrixUser] = attrs.field(factory=list)

    async def user(self, prefix: str) -> MatrixUser:
        user = await MatrixUser.register(self.homeserver.synapse, prefix)  # type: ignore
        self.users.append(user)
        return user

    async def portal(self, channel: str) -> str:
        """The portal of #channel, mapped now if no test before mapped it."""
        found = next(c for c in self.world.guild.channels if c.name == channel)
        portal = await self.bridge.storage.portals.get("discord",
                                                       f"{self.world.guild.id}/{found.id}")
        return portal.mxid if portal and portal.mxid else await self.map(channel)

    async def map(self, channel: str, *options: str) -> str:
        """Map #channel of the world's server and return the portal alice was invited to."""
        await self.alice.send_text(self.room, f"map discord {self.world.guild.id}/#{channel}"
                                   f" --profile Jobb {' '.join(options)}".strip())
        await self.alice.wait_for_notice(self.room, self.bot, "Mapped discord")
        return await self.alice.wait_for_invite()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(db_kind, homeserver, postgres, tmp_path_factory) -> AsyncIterator[Env]:
    directory = tmp_path_factory.mktemp("discord")
    database = None
    if db_kind == "sqlite":
        uri = f"sqlite:{directory / 'relayforge.db'}"
    else:
        if postgres.admin_dsn is None:
            unavailable("no PostgreSQL server answers and none could be started")
        database = f"relayforge_discord_{secrets.token_hex(6)}"
        uri = await postgres.create_database(database)
    discord = await FakeDiscord().start()
    world = build_world(discord)
    corporate = discord.add_guild("Corp", world.carol)
    callback = f"{homeserver.appservice_url}/link/discord/callback"
    config = homeserver.bridge_config(directory, uri, extra={
        # The test homeserver is plain http on loopback: declared public for the avatars.
        "homeserver": {"public_url": homeserver.synapse.url},
        "networks": {"discord": discord_settings(discord, callback)},
        "policy": {"high_risk": {"discord_corporate_servers": [corporate.id]}},
        "delivery": {"max_attempts": 3}})
    bridge = Bridge(config, [])
    await bridge.start()
    alice = await MatrixUser.register(homeserver.synapse, "alice")
    bot = homeserver.bot_mxid
    room = await link_discord(alice, bot, discord, world.alice)
    consent = next(body for body in await alice.notices_from(room, bot)
                   if "Reply yes to link" in body)
    env = Env(discord, world, bridge, alice, room, bot, consent, homeserver, [alice])
    yield env
    await bridge.stop()
    await discord.stop()
    for user in env.users:
        await user.close()
    if database:
        await postgres.drop_database(database)
