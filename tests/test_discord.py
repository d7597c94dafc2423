"""Discord end to end: the unmodified discord.py inside the bridge talks to the wire-level fake
(tests/fakes/discord); Matrix is the real Synapse. One bridge, one fake and one linked account
per database for the whole module (linking is the slow part), each test in channels and
threads of its own."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import attrs
import pytest
import pytest_asyncio
from mautrix.types import (
    EventType,
    Format,
    MediaMessageEventContent,
    MessageType,
    TextMessageEventContent,
)

from bridge.app import Bridge
from tests.fakes.discord import FakeDiscord

from .support.discord import World, build_world, discord_settings, link_discord
from .support.matrix import MatrixUser

pytestmark = pytest.mark.asyncio(loop_scope="module")


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
            pytest.skip("no PostgreSQL server answers and none could be started")
        database = f"relayforge_discord_{secrets.token_hex(6)}"
        uri = await postgres.create_database(database)
    discord = await FakeDiscord().start()
    world = build_world(discord)
    corporate = discord.add_guild("Corp", world.carol)
    callback = f"{homeserver.appservice_url}/link/discord/callback"
    config = homeserver.bridge_config(directory, uri, extra={
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


def body_is(text: str):
    return lambda e: e.type == EventType.ROOM_MESSAGE and e.content.body == text


def html(formatted: str, body: str) -> TextMessageEventContent:
    return TextMessageEventContent(msgtype=MessageType.TEXT, body=body, format=Format.HTML,
                                   formatted_body=formatted)


def contents(discord: FakeDiscord, channel) -> list[str]:
    return [m.content for m in discord.messages(channel)]


async def test_linking_through_discords_page(env: Env):
    discord, world = env.discord, env.world
    # The authorisation asked for exactly `identify guilds`, with PKCE and the exact callback.
    asked = discord.oauth.authorize_requests[0]
    assert asked["scope"] == "identify guilds"
    assert asked["code_challenge_method"] == "S256" and asked["code_challenge"]
    assert asked["redirect_uri"] == discord.app.redirect_uris[0]
    assert asked["redirect_uri"].endswith("/link/discord/callback")
    exchange = discord.calls("/oauth2/token")[0]
    assert exchange.ok and exchange.form["code_verifier"]
    # The verification ping came before the consent, which says what will happen.
    assert [c.ok for c in discord.calls("/users/@me/guilds")][0]
    assert f"Verified {world.alice.id} on discord" in env.consent
    assert "can see 1 server(s): Acme" in env.consent
    assert "reactions are added by the RelayForge bot" in env.consent
    assert "(identify)" in env.consent and "(guilds)" in env.consent
    # Only the refresh token is kept, sealed; never the access token.
    account = await env.bridge.accounts.for_matrix_user(env.alice.mxid)
    persona = await env.bridge.accounts.find_persona(account.id, f"discord:{world.alice.id}")
    rows = await env.bridge.storage.db.fetch(
        "SELECT field FROM vault_secret WHERE profile=$1 AND persona=$2", *persona.vault_ref)
    assert [r["field"] for r in rows] == ["refresh_token"]
    values = await env.bridge.storage.db.fetch("SELECT * FROM vault_secret")
    grant = discord.grants[0]
    assert all(grant.refresh_token.encode() not in repr(dict(r)).encode() for r in values)


async def test_a_corporate_server_needs_fresh_mfa(env: Env):
    carol = await env.user("carol")
    room = await carol.open_management_room(env.bot)
    from .support.slack import start_link
    from .support.discord import authorise

    url = await start_link(carol, env.bot, room, command="link discord --profile Jobb")
    status, page = await authorise(env.discord, env.world.carol, url)
    # Carol is on the server the policy calls corporate: no MFA set up, no link.
    assert status == 400 and "multi-factor authentication" in page
    assert "corporate Discord server" in page and "Nothing was stored" in page
    account = await env.bridge.accounts.for_matrix_user(carol.mxid)
    assert not [p for profile in await env.bridge.storage.profiles.for_account(account.id)
                for p in await env.bridge.storage.personas.for_profile(profile.id)]


async def test_messages_both_ways_through_the_webhook(env: Env):
    discord, world, alice = env.discord, env.world, env.alice
    portal = await env.map("general")
    # Discord -> Matrix, with formatting and a mention.
    await discord.post(world.general, world.bob, f"**hello** from <@{world.carol.id}>",
                       mentions=[world.carol])
    hello = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE and "hello" in e.content.body,
        "bob's message")
    assert "<strong>hello</strong>" in hello.content.formatted_body
    assert "matrix.to" in hello.content.formatted_body
    assert hello.content["m.mentions"]["user_ids"]
    member = await alice.client.get_state_event(portal, EventType.ROOM_MEMBER, hello.sender)
    assert member.displayname.startswith("Bobby")

    # Matrix -> Discord: through the bridge's webhook, under alice's Discord name and picture.
    await alice.client.send_message(portal, html("hi <b>Bob</b>", "hi Bob"))
    await discord.wait_until(lambda: "hi **Bob**" in contents(discord, world.general),
                             "alice's message in Discord")
    sent = next(m for m in discord.messages(world.general) if m.content == "hi **Bob**")
    assert sent.webhook_id and sent.author.username == "Alice Liddell"
    assert sent.author.avatar and world.alice.id in sent.author.avatar
    hook = discord.webhooks[sent.webhook_id]
    assert hook.creator.id == discord.app.bot.id and hook.channel_id == world.general.id
    # A pill of a Discord ghost becomes a real mention.
    await alice.client.send_message(portal, html(
        f'ping <a href="https://matrix.to/#/{hello.sender}">Bobby</a>', "ping Bobby"))
    await discord.wait_until(lambda: f"ping <@{world.bob.id}>"
                             in contents(discord, world.general), "the mention")
    # The webhook's own messages never came back into Matrix as someone else's.
    bodies = [e.content.body for e in await alice.room_events(portal)
              if e.type == EventType.ROOM_MESSAGE and e.sender != alice.mxid]
    assert "hi **Bob**" not in bodies and "hi Bob" not in bodies


async def test_replies_edits_deletes_and_reactions_both_ways(env: Env):
    discord, world, alice = env.discord, env.world, env.alice
    portal = await _portal(env, world.general.id)
    general = world.general

    # Discord -> Matrix.
    bobs = await discord.post(general, world.bob, "frist")
    first = await alice.wait_for_event(portal, body_is("frist"), "bob's message", after=None)
    await discord.edit(bobs, "first")
    edit = await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_MESSAGE
                                      and e.content.get_edit() == first.event_id, "the edit",
                                      after=None)
    assert edit.content.body == "first"
    await discord.react(world.bob, bobs, "👍")
    reaction = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.REACTION
        and e.content.relates_to.event_id == first.event_id, "bob's reaction", after=None)
    assert reaction.content.relates_to.key == "👍"
    await discord.post(general, world.carol, "agreed", reply_to=bobs)
    reply = await alice.wait_for_event(portal, body_is("agreed"), "carol's reply", after=None)
    assert reply.content.get_reply_to() == first.event_id
    await discord.delete(bobs)
    await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_REDACTION
                               and e.redacts == first.event_id, "the deletion", after=None)

    # Matrix -> Discord.
    mine = await alice.send_text(portal, "draft")
    await discord.wait_until(lambda: "draft" in contents(discord, general), "alice's draft")
    sent = next(m for m in discord.messages(general) if m.content == "draft")
    await alice.send_text(portal, "final", edit_of=mine)
    await discord.wait_until(lambda: sent.content == "final", "the edit")
    await alice.client.react(portal, mine, "🎉")
    await discord.wait_until(lambda: discord.app.bot.id in sent.reactions.get("🎉", []),
                             "the bot's reaction for alice")
    reply_event = await alice.send_text(portal, "answer", reply_to=reply.event_id)
    await discord.wait_until(lambda: any(m.content.endswith("answer")
                                         for m in discord.messages(general)), "the reply")
    answer = next(m for m in discord.messages(general) if m.content.endswith("answer"))
    replied = next(m for m in discord.messages(general) if m.content == "agreed")
    assert f"/{general.id}/{replied.id}" in answer.content.split("\n")[0]
    await alice.client.redact(portal, mine)
    await discord.wait_until(lambda: sent.deleted, "the deletion")
    # None of what the bridge did came back as a new message or a second reaction.
    events = await alice.room_events(portal)
    assert not [e for e in events if e.type == EventType.REACTION and e.sender != alice.mxid
                and e.content.relates_to.key == "🎉"]
    assert reply_event


async def _portal(env: Env, channel_id: str) -> str:
    portal = await env.bridge.storage.portals.get("discord",
                                                  f"{env.world.guild.id}/{channel_id}")
    assert portal is not None and portal.mxid
    return portal.mxid
