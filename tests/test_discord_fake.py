"""The Discord fake against the unmodified discord.py (and plain HTTP where discord.py has no
call): REST shapes and headers, 429s discord.py retries, the Gateway's READY, RESUME and
INVALID_SESSION, OAuth2 with PKCE and the exact redirect URI, webhooks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import discord
import pytest
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from tests.fakes.discord import FORUM, FakeDiscord
from tests.fakes.discord.models import snowflake


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@asynccontextmanager
async def bot(fake: FakeDiscord) -> AsyncIterator[tuple[discord.Client, list]]:
    Route.BASE = fake.api_url
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    intents = discord.Intents.default()
    intents.message_content = intents.members = True
    client = discord.Client(intents=intents, guild_ready_timeout=0.05)
    seen: list[discord.Message] = []
    ready = asyncio.Event()
    # What the bot sees wakes the fake's waiters too.
    client.event(_named("on_ready", lambda: (ready.set(), fake.activity.notify())))
    client.event(_named("on_message", lambda m: (seen.append(m), fake.activity.notify())))
    task = asyncio.create_task(client.start(fake.app.bot_token))
    await fake.wait_until(lambda: ready.is_set() or task.done(), "the bot ready")
    try:
        yield client, seen
    finally:
        await client.close()
        task.cancel()


def _named(name: str, action):
    async def handler(*args) -> None:
        action(*args)
    handler.__name__ = name
    return handler


async def test_rest_answers_as_discord_does(fake):
    async with aiohttp.ClientSession() as http, http.get(
            f"{fake.api_url}/users/@me",
            headers={"Authorization": f"Bot {fake.app.bot_token}"}) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/json"
        assert "X-RateLimit-Bucket" in r.headers
        assert (await r.json())["id"] == fake.app.bot.id
    async with aiohttp.ClientSession() as http, http.get(
            f"{fake.api_url}/users/@me", headers={"Authorization": "Bot wrong"}) as r:
        assert r.status == 401


async def test_discord_py_logs_in_sees_the_world_and_waits_out_a_429(fake):
    alice = fake.add_user("alice")
    guild = fake.add_guild("Acme", alice)
    general = fake.add_channel(guild, "general")
    async with bot(fake) as (client, seen):
        assert [g.name for g in client.guilds] == ["Acme"]
        assert client.get_channel(int(general.id)).name == "general"
        await fake.post(general, alice, "hello")
        await fake.wait_until(lambda: [m.content for m in seen] == ["hello"], "the message")
        fake.rate_limit(f"/channels/{general.id}", retry_after=0.2, times=1, method="GET")
        fetched = await client.fetch_channel(int(general.id))
        assert fetched.name == "general"
        calls = fake.calls(f"/channels/{general.id}", "GET")
        assert [c.status for c in calls[-2:]] == [429, 200]
        assert fake.rest.early == []


async def test_resume_replays_what_was_missed_and_an_invalid_session_does_not(fake):
    alice = fake.add_user("alice")
    guild = fake.add_guild("Acme", alice)
    general = fake.add_channel(guild, "general")
    async with bot(fake) as (_client, seen):
        await fake.gateway.drop()
        await fake.post(general, alice, "while away")
        await fake.wait_until(lambda: "while away" in [m.content for m in seen], "replayed")
        assert fake.gateway.resumes == 1 and fake.gateway.identifies == 1
        await fake.gateway.invalidate()
        await fake.post(general, alice, "lost")
        await fake.wait_until(lambda: fake.gateway.identifies == 2, "a fresh IDENTIFY")
        await fake.post(general, alice, "after")
        await fake.wait_until(lambda: "after" in [m.content for m in seen], "live again")
        assert "lost" not in [m.content for m in seen]


async def test_oauth_needs_pkce_and_the_exact_redirect(fake):
    alice = fake.add_user("alice")
    fake.add_guild("Acme", alice)
    fake.app.redirect_uris = ["https://bridge.example/link/discord/callback"]
    fake.sign_in(alice)
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()
                                         ).rstrip(b"=").decode()
    query = {"client_id": fake.app.client_id, "response_type": "code",
             "scope": "identify guilds", "state": "s1", "code_challenge": challenge,
             "code_challenge_method": "S256",
             "redirect_uri": "https://bridge.example/link/discord/callback"}
    async with aiohttp.ClientSession() as http:
        async with http.get(fake.authorize_endpoint, params={
                **query, "redirect_uri": "https://bridge.example/other"},
                allow_redirects=False) as r:
            assert r.status == 400
        async with http.get(fake.authorize_endpoint, params=query,
                            allow_redirects=False) as r:
            assert r.status == 302
            back = yarl.URL(r.headers["Location"])
        assert back.query["state"] == "s1"
        form = {"grant_type": "authorization_code", "code": back.query["code"],
                "redirect_uri": query["redirect_uri"], "client_id": fake.app.client_id,
                "client_secret": fake.app.client_secret, "code_verifier": "wrong" * 10}
        async with http.post(f"{fake.api_url}/oauth2/token", data=form) as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid_grant"
        async with http.get(fake.authorize_endpoint, params=query,
                            allow_redirects=False) as r:
            code = yarl.URL(r.headers["Location"]).query["code"]
        async with http.post(f"{fake.api_url}/oauth2/token", data={
                **form, "code": code, "code_verifier": verifier}) as r:
            tokens = await r.json()
            assert r.status == 200 and tokens["scope"] == "identify guilds"
        async with http.post(f"{fake.api_url}/oauth2/token", data={
                "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                "client_id": fake.app.client_id,
                "client_secret": fake.app.client_secret}) as r:
            fresh = await r.json()
            assert fresh["refresh_token"] != tokens["refresh_token"]  # rotated
        bearer = {"Authorization": f"Bearer {fresh['access_token']}"}
        async with http.get(f"{fake.api_url}/users/@me/guilds", headers=bearer) as r:
            assert [g["name"] for g in await r.json()] == ["Acme"]
        async with http.post(f"{fake.api_url}/oauth2/token/revoke", data={
                "token": fresh["refresh_token"], "client_id": fake.app.client_id,
                "client_secret": fake.app.client_secret}) as r:
            assert r.status == 200
        async with http.get(f"{fake.api_url}/users/@me", headers=bearer) as r:
            assert r.status == 401


async def test_webhooks_post_into_channels_and_forum_posts(fake):
    alice = fake.add_user("alice")
    guild = fake.add_guild("Acme", alice)
    forum = fake.add_channel(guild, "help", FORUM)
    post, _ = await fake.forum_post(forum, alice, "Question", "how?")
    async with bot(fake) as (client, _seen):
        channel = client.get_channel(int(forum.id))
        hook = await channel.create_webhook(name="RelayForge")
        partial = discord.Webhook.partial(hook.id, hook.token, client=client)
        with pytest.raises(discord.HTTPException):
            await partial.send("no thread", wait=True)
        sent = await partial.send("answer", username="Alice", wait=True,
                                  thread=discord.Object(int(post.id)))
        assert sent.webhook_id == hook.id
        assert [m.content for m in fake.messages(post)] == ["how?", "answer"]
        assert fake.messages(post)[-1].author.username == "Alice"


async def test_history_pages_newest_first_as_discord_does(fake):
    alice = fake.add_user("alice")
    bob = fake.add_user("bob")
    guild = fake.add_guild("Acme", alice, [bob])
    general = fake.add_channel(guild, "general")
    hidden = fake.add_channel(guild, "hidden")
    start = 1_700_000_000_000
    posted = [await fake.post(general, alice if i % 2 else bob, f"old {i}",
                              message_id=snowflake(start + i * 60_000)) for i in range(130)]
    await fake.edit(posted[3], "old 3, edited")
    await fake.react(bob, posted[5], "👍")
    await fake.react(alice, posted[5], "👍")
    await fake.react(alice, posted[5], "party:123")
    fake.unreadable.add(hidden.id)
    secret = fake.add_channel(guild, "secret")
    secret.hidden_from.add(bob.id)
    async with bot(fake) as (client, _seen):
        channel = client.get_channel(int(general.id))
        # What a person may read: @everyone's permissions, less a channel's overwrites.
        members = client.get_guild(int(guild.id))
        readable = {name: [client.get_channel(int(c.id)).permissions_for(members.get_member(
            int(u.id))).read_message_history for u in (alice, bob)]
            for name, c in (("general", general), ("secret", secret))}
        assert readable == {"general": [True, True], "secret": [True, False]}
        # The last 120, oldest first: discord.py pages back with `before` (100 at most a
        # page) and turns Discord's newest-first pages around.
        last = [m async for m in channel.history(limit=120, oldest_first=False)]
        assert [m.content for m in last] == [f"old {i}" for i in range(129, 9, -1)]
        reads = [q for c, q in fake.history_reads if c == general.id]
        assert reads[0] == {"limit": "100"} and reads[1]["before"] == str(posted[30].id)
        # Forwards from a message with `after`, each page oldest-first after turning.
        after = [m async for m in channel.history(after=discord.Object(int(posted[1].id)),
                                                  limit=105, oldest_first=True)]
        assert [m.content for m in after][:3] == ["old 2", "old 3, edited", "old 4"]
        assert len(after) == 105 and after[-1].content == "old 106"
        assert after[0].created_at.timestamp() * 1000 == start + 2 * 60_000
        assert after[1].edited_at is not None and after[1].author.id == int(alice.id)
        # Around a message: half before (itself included), half after.
        around = [m async for m in channel.history(around=discord.Object(int(posted[50].id)),
                                                   limit=5)]
        assert sorted(m.content for m in around) == [f"old {i}" for i in range(48, 53)]
        # Reactions: counts in the message, who reacted page by page.
        reacted = next(m for m in after if m.content == "old 5")
        counts = {str(r.emoji): r.count for r in reacted.reactions}
        assert counts == {"👍": 2, "<:party:123>": 1}
        thumbs = next(r for r in reacted.reactions if str(r.emoji) == "👍")
        assert sorted(u.id for u in [u async for u in thumbs.users(limit=1)]
                      + [u async for u in thumbs.users(after=discord.Object(
                          min(int(alice.id), int(bob.id))))]) == sorted(
            [int(alice.id), int(bob.id)])
        # A channel the bot may not read, and a limit Discord refuses.
        with pytest.raises(discord.Forbidden):
            [m async for m in client.get_channel(int(hidden.id)).history(limit=5)]
        async with aiohttp.ClientSession() as http, http.get(
                f"{fake.api_url}/channels/{general.id}/messages", params={"limit": "101"},
                headers={"Authorization": f"Bot {fake.app.bot_token}"}) as r:
            assert r.status == 400
        # A 429 on history is waited out by discord.py (the answer has a Via header).
        fake.rate_limit(f"/channels/{general.id}/messages", retry_after=0.2, method="GET")
        assert [m.content async for m in channel.history(limit=1)] == ["old 129"]
        assert fake.rest.early == []
