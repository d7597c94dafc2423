"""The Slack fake, driven by the unmodified slack-sdk: if these pass, a connector built on
slack-sdk meets the same wire shapes, errors and flows it would meet at Slack."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from yarl import URL

from .fakes.slack import FakeSlack
from .fakes.slack.scenario import World
from .support.slack_history import slack, world

__all__ = ["slack", "world"]  # the Slack fake and its world, as fixtures

REDIRECT = "https://bridge.example/slack/callback"

# slack-sdk's oauth_v2_access builds an aiohttp BasicAuth, which newer aiohttp deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")


async def error_of(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        await call
    return caught.value


async def code_of(call: Any) -> str:
    return str((await error_of(call)).response["error"])


# ---- Web API -----------------------------------------------------------------------------------


async def test_auth_test_and_the_request_log(slack: FakeSlack, world: World) -> None:
    web_client = slack.web_client(world.token)
    me = await web_client.auth_test()
    assert (me["user_id"], me["team_id"], me["user"]) == (world.alice.id, world.team.id, "alice")
    assert me["is_enterprise_install"] is False and "enterprise_id" not in me.data
    # Slack reports the token's scopes in a header; None means every scope here.
    assert "X-OAuth-Scopes" in me.headers

    [record] = slack.calls("auth.test")
    assert record.token == world.token and record.http_method == "POST"
    assert record.ok is True and record.status == 200


async def test_token_refusals_match_slack(slack: FakeSlack, world: World) -> None:
    assert await code_of(slack.web_client(None).auth_test()) == "not_authed"
    assert await code_of(slack.web_client("xoxp-1-2-3-nope").auth_test()) == "invalid_auth"
    expiring = slack.issue_token(world.bob)
    slack.expire_token(expiring)
    assert await code_of(slack.web_client(expiring).auth_test()) == "token_expired"

    await slack.revoke_token(world.token)
    revoked = await error_of(slack.web_client(world.token).conversations_list())
    assert revoked.response["error"] == "token_revoked" and revoked.response.status_code == 200

    carols = slack.issue_token(world.carol)
    await slack.deactivate_user(world.carol)
    assert await code_of(slack.web_client(carols).auth_test()) == "account_inactive"
    # An app-level token is only for apps.connections.open.
    app_level = slack.web_client(slack.app.app_token).auth_test()
    assert await code_of(app_level) == "not_allowed_token_type"


async def test_auth_revoke_through_the_api(slack: FakeSlack, world: World) -> None:
    web_client = slack.web_client(world.token)
    assert (await web_client.auth_revoke(test=True))["revoked"] is False
    assert (await web_client.auth_revoke())["revoked"] is True
    assert (await error_of(web_client.auth_test())).response["error"] == "token_revoked"


async def test_enterprise_grid_tokens(slack: FakeSlack) -> None:
    org = slack.create_enterprise("Globex Corp")
    east = slack.create_team("East", enterprise=org)
    west = slack.create_team("West", enterprise=org)
    dana = slack.create_user(east, "dana")
    slack.add_to_team(dana, west)
    slack.create_channel(west, "west-news", [])
    assert dana.id.startswith("W")

    workspace = await slack.web_client(slack.issue_token(dana)).auth_test()
    assert workspace["enterprise_id"] == org.id and workspace["team_id"] == east.id
    assert workspace["is_enterprise_install"] is False

    org_client = slack.web_client(slack.issue_token(dana, enterprise_install=True))
    org_wide = await org_client.auth_test()
    assert org_wide["is_enterprise_install"] is True and org_wide["team_id"] == org.id
    assert await code_of(org_client.conversations_list()) == "missing_argument"
    listed = await org_client.conversations_list(team_id=west.id)
    assert [c["name"] for c in listed["channels"]] == ["west-news"]
    profile = (await org_client.users_info(user=dana.id))["user"]
    assert profile["enterprise_user"]["teams"] == [east.id, west.id]


async def test_conversations_list_shows_only_what_the_user_can_see(slack: FakeSlack,
                                                                  world: World) -> None:
    web_client = slack.web_client(world.token)
    public = await web_client.conversations_list()
    assert [c["id"] for c in public["channels"]] == [world.general.id]
    assert public["channels"][0]["is_member"] is True

    everything = await web_client.conversations_list(
        types="public_channel,private_channel,im,mpim")
    ids = {c["id"] for c in everything["channels"]}
    assert ids == {world.general.id, world.secret.id, world.dm.id, world.group.id}
    dm = next(c for c in everything["channels"] if c["id"] == world.dm.id)
    assert dm["is_im"] is True and dm["user"] == world.bob.id
    group = next(c for c in everything["channels"] if c["id"] == world.group.id)
    assert group["is_mpim"] is True and group["name"].startswith("mpdm-")

    # The SDK follows Slack's cursors by itself when iterated.
    pages = [page async for page in await web_client.conversations_list(
        types="public_channel,private_channel,im,mpim", limit=1)]
    assert len(pages) == 4
    assert pages[-1]["response_metadata"]["next_cursor"] == ""

    hidden = web_client.conversations_info(channel=world.hidden.id)
    assert await code_of(hidden) == "channel_not_found"
    members = await web_client.conversations_members(channel=world.secret.id)
    assert members["members"] == [world.alice.id, world.bob.id]


async def test_token_in_a_form_field_or_query_and_raw_shapes(slack: FakeSlack, world: World
                                                             ) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{slack.api_url}auth.test",
                             data={"token": world.token}) as response:
            assert (await response.json())["user_id"] == world.alice.id
        async with http.get(f"{slack.api_url}conversations.info",
                            params={"token": world.token,
                                    "channel": world.general.id}) as response:
            assert (await response.json())["channel"]["name"] == "general"
        async with http.post(f"{slack.api_url}chat.postMessage",
                             json={"channel": "#general", "text": "json body"},
                             headers={"Authorization": f"Bearer {world.token}"}) as response:
            body = await response.json()
            assert response.status == 200 and body["channel"] == world.general.id
        async with http.post(f"{slack.api_url}no.such.method",
                             data={"token": world.token}) as response:
            assert (await response.json()) == {"ok": False, "error": "unknown_method"}
    assert [r.params for r in slack.calls("chat.postMessage")] == [
        {"channel": "#general", "text": "json body"}]


async def test_join_a_public_channel(slack: FakeSlack, world: World) -> None:
    random = slack.create_channel(world.team, "random", [world.bob])
    web_client = slack.web_client(world.token)
    joined = await web_client.conversations_join(channel=random.id)
    assert joined["channel"]["is_member"] is True and "warning" not in joined.data
    again = await web_client.conversations_join(channel=random.id)
    assert again["warning"] == "already_in_channel"
    private = web_client.conversations_join(channel=world.secret.id)
    assert await code_of(private) == "method_not_supported_for_channel_type"
    await slack.settle()
    kinds = [(p["event"]["type"], p["event"].get("subtype")) for p in slack.sent_events]
    assert kinds == [("member_joined_channel", None), ("message", "channel_join")]


async def test_missing_scope(slack: FakeSlack, world: World) -> None:
    narrow = slack.web_client(slack.issue_token(world.alice, ["channels:read", "users:read"]))
    assert (await narrow.conversations_list())["ok"]
    refused = await error_of(narrow.chat_postMessage(channel=world.general.id, text="hi"))
    assert refused.response["error"] == "missing_scope"
    assert refused.response["needed"] == "chat:write"
    refused = await error_of(narrow.conversations_list(types="im"))
    assert refused.response["needed"] == "im:read"


async def test_users_profiles_avatars_team_and_emoji(slack: FakeSlack, world: World) -> None:
    web_client = slack.web_client(world.token)
    bob = (await web_client.users_info(user=world.bob.id))["user"]
    assert bob["profile"]["display_name"] == "Bobby" and bob["name"] == "bob"
    async with aiohttp.ClientSession() as http:
        for size in ("image_72", "image_192"):
            async with http.get(bob["profile"][size]) as response:
                assert response.status == 200 and await response.read() == world.bob.avatar
        emoji = (await web_client.emoji_list())["emoji"]
        assert emoji["squirrel2"] == "alias:shipit"
        async with http.get(emoji["partyparrot"]) as response:
            assert (await response.read()).startswith(b"\x89PNG")

    everyone = await web_client.users_list()
    assert {m["id"] for m in everyone["members"]} == {world.alice.id, world.bob.id,
                                                      world.carol.id}
    team = (await web_client.team_info())["team"]
    assert (team["id"], team["name"]) == (world.team.id, "Acme")
    assert (await error_of(web_client.users_info(user="U0NOBODY"))).response["error"] \
        == "user_not_found"


async def test_post_thread_update_delete(slack: FakeSlack, world: World) -> None:
    web_client = slack.web_client(world.token)
    posted = await web_client.chat_postMessage(channel=world.general.id, text="hello")
    ts = posted["ts"]
    assert posted["channel"] == world.general.id and posted["message"]["user"] == world.alice.id
    assert len(ts.split(".")[1]) == 6

    reply = await web_client.chat_postMessage(channel=world.general.id, text="in thread",
                                              thread_ts=ts)
    broadcast = await web_client.chat_postMessage(channel=world.general.id, text="to all",
                                                  thread_ts=ts, reply_broadcast=True)
    assert len({ts, reply["ts"], broadcast["ts"]}) == 3

    history = await web_client.conversations_history(channel=world.general.id)
    # Newest first; plain replies stay in the thread, broadcasts show in the channel.
    assert [m["text"] for m in history["messages"]] == ["to all", "hello"]
    assert history["messages"][1]["reply_count"] == 2
    thread = await web_client.conversations_replies(channel=world.general.id, ts=ts)
    assert [m["text"] for m in thread["messages"]] == ["hello", "in thread", "to all"]
    assert thread["messages"][1]["parent_user_id"] == world.alice.id

    updated = await web_client.chat_update(channel=world.general.id, ts=reply["ts"],
                                           text="edited")
    assert updated["message"]["edited"]["user"] == world.alice.id
    other = await slack.post_message(world.bob, world.general, "bob's")
    not_mine = web_client.chat_update(channel=world.general.id, ts=other.ts, text="nope")
    assert await code_of(not_mine) == "cant_update_message"

    assert (await web_client.chat_delete(channel=world.general.id, ts=reply["ts"]))["ok"]
    gone = web_client.chat_delete(channel=world.general.id, ts=reply["ts"])
    assert await code_of(gone) == "message_not_found"

    # Posting to a person's ID lands in the DM with them.
    to_bob = await web_client.chat_postMessage(channel=world.bob.id, text="psst")
    assert to_bob["channel"] == world.dm.id
    outside = web_client.chat_postMessage(channel=world.hidden.id, text="x")
    assert await code_of(outside) == "channel_not_found"


async def test_history_windows_and_cursor(slack: FakeSlack, world: World) -> None:
    posted = [await slack.post_message(world.bob, world.general, f"m{i}") for i in range(5)]
    web_client = slack.web_client(world.token)
    window = await web_client.conversations_history(
        channel=world.general.id, oldest=posted[1].ts, latest=posted[4].ts)
    assert [m["text"] for m in window["messages"]] == ["m3", "m2"]
    inclusive = await web_client.conversations_history(
        channel=world.general.id, oldest=posted[1].ts, latest=posted[4].ts, inclusive=True)
    assert [m["text"] for m in inclusive["messages"]] == ["m4", "m3", "m2", "m1"]

    first = await web_client.conversations_history(channel=world.general.id, limit=2)
    assert first["has_more"] is True
    second = await web_client.conversations_history(
        channel=world.general.id, limit=2, cursor=first["response_metadata"]["next_cursor"])
    assert [m["text"] for m in first["messages"] + second["messages"]] == [
        "m4", "m3", "m2", "m1"]


async def test_reactions(slack: FakeSlack, world: World) -> None:
    message = await slack.post_message(world.bob, world.general, "react to me")
    web_client = slack.web_client(world.token)
    on_message = {"channel": world.general.id, "timestamp": message.ts}
    await web_client.reactions_add(name="thumbsup", **on_message)
    assert await code_of(web_client.reactions_add(name="thumbsup", **on_message)) \
        == "already_reacted"
    assert await code_of(web_client.reactions_add(name=":wave:", **on_message)) \
        == "invalid_name"
    history = await web_client.conversations_history(channel=world.general.id)
    assert history["messages"][0]["reactions"] == [
        {"name": "thumbsup", "users": [world.alice.id], "count": 1}]
    await web_client.reactions_remove(name="thumbsup", **on_message)
    assert await code_of(web_client.reactions_remove(name="thumbsup", **on_message)) \
        == "no_reaction"


async def test_files_upload_v2_end_to_end(slack: FakeSlack, world: World) -> None:
    web_client = slack.web_client(world.token)
    data = b"\x89PNG fake picture bytes"
    done = await web_client.files_upload_v2(channel=world.general.id, file=data,
                                            filename="cat.png", title="A cat",
                                            initial_comment="look", thread_ts=None)
    file_id = done["file"]["id"]
    assert [r.method for r in slack.requests] == ["files.getUploadURLExternal",
                                                  "files.completeUploadExternal"]

    message = (await web_client.conversations_history(channel=world.general.id))["messages"][0]
    assert message["text"] == "look" and message["subtype"] == "file_share"
    [shared] = message["files"]
    assert (shared["id"], shared["name"], shared["mimetype"]) == (file_id, "cat.png",
                                                                  "image/png")
    info = (await web_client.files_info(file=file_id))["file"]
    assert info["size"] == len(data) and info["title"] == "A cat"

    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {world.token}"}
        for url in (shared["url_private"], shared["url_private_download"]):
            async with http.get(url, headers=headers) as response:
                assert response.status == 200 and await response.read() == data
        # Without a token Slack answers with its sign-in page, not an error status.
        async with http.get(shared["url_private"]) as response:
            assert response.status == 200 and response.content_type == "text/html"
        carols = slack.issue_token(world.carol)
        async with http.get(shared["url_private"],
                            headers={"Authorization": f"Bearer {carols}"}) as response:
            assert await response.read() == data  # carol is in #general
        await slack.revoke_token(carols)
        async with http.get(shared["url_private"],
                            headers={"Authorization": f"Bearer {carols}"}) as response:
            assert response.content_type == "text/html"


async def test_remote_upload_is_a_file_share_message(slack: FakeSlack, world: World) -> None:
    message = await slack.upload_file(world.bob, world.dm, "notes.txt", b"hi", comment="fyi")
    history = await slack.web_client(world.token).conversations_history(channel=world.dm.id)
    [shown] = history["messages"]
    assert shown["ts"] == message.ts and shown["files"][0]["mimetype"] == "text/plain"


async def test_rate_limiting(slack: FakeSlack, world: World) -> None:
    web_client = slack.web_client(world.token)
    slack.rate_limit("chat.postMessage", retry_after=7, count=1)
    limited = await error_of(web_client.chat_postMessage(channel=world.general.id, text="a"))
    # The default client only retries connection errors: the 429 surfaces as an error.
    assert limited.response.status_code == 429
    assert limited.response.headers["Retry-After"] == "7"
    assert limited.response["error"] == "ratelimited"
    assert (await web_client.chat_postMessage(channel=world.general.id, text="b"))["ok"]
    assert [r.status for r in slack.calls("chat.postMessage")] == [429, 200]

    slack.rate_limit(retry_after=1, duration=60)  # every method
    assert (await error_of(web_client.auth_test())).response.status_code == 429
    slack.clear_rate_limits()
    assert (await web_client.auth_test())["ok"]

    # With the SDK's optional rate-limit handler (one retry by default) it waits
    # Retry-After and tries again.
    patient = slack.web_client(world.token, retry_handlers=[AsyncRateLimitErrorRetryHandler()])
    slack.rate_limit("users.list", retry_after=0, count=1)
    assert (await patient.users_list())["ok"]
    assert [r.status for r in slack.calls("users.list")] == [429, 200]


# ---- Socket Mode ------------------------------------------------------------------------------


async def socket_client(slack: FakeSlack, received: asyncio.Queue[SocketModeRequest],
                        ack: bool = True) -> SocketModeClient:
    sm = SocketModeClient(app_token=slack.app.app_token,
                          web_client=AsyncWebClient(base_url=slack.api_url))

    async def listener(client_: SocketModeClient, request: SocketModeRequest) -> None:
        received.put_nowait(request)
        if ack:
            await client_.send_socket_mode_response(
                SocketModeResponse(envelope_id=request.envelope_id))

    sm.socket_mode_request_listeners.append(listener)
    await sm.connect()
    await slack.socket.wait_connected()
    return sm


async def next_request(received: asyncio.Queue[SocketModeRequest]) -> SocketModeRequest:
    async with asyncio.timeout(5):
        return await received.get()


async def test_socket_mode_event_and_ack(slack: FakeSlack, world: World) -> None:
    received: asyncio.Queue[SocketModeRequest] = asyncio.Queue()
    sm = await socket_client(slack, received)
    try:
        message = await slack.post_message(world.bob, world.general, "hi from bob")
        request = await next_request(received)
        assert request.type == "events_api" and request.retry_attempt == 0
        payload = request.payload
        assert payload["type"] == "event_callback" and payload["team_id"] == world.team.id
        assert payload["api_app_id"] == slack.app.id
        assert payload["authorizations"][0]["user_id"] == world.alice.id
        event = payload["event"]
        assert event["type"] == "message" and "subtype" not in event
        assert (event["user"], event["text"], event["ts"], event["channel"],
                event["channel_type"]) == (world.bob.id, "hi from bob", message.ts,
                                           world.general.id, "channel")
        assert event["blocks"][0]["type"] == "rich_text" and event["client_msg_id"]
        [acked] = await slack.socket.wait_acked()
        assert acked.ack == {"envelope_id": request.envelope_id}

        # Slack echoes the user's own API posts back as events.
        posted = await slack.web_client(world.token).chat_postMessage(channel=world.dm.id,
                                                                   text="echo")
        echo = (await next_request(received)).payload["event"]
        assert (echo["ts"], echo["user"], echo["channel_type"]) == (
            posted["ts"], world.alice.id, "im")
        [opened] = slack.calls("apps.connections.open")
        assert opened.token == slack.app.app_token
    finally:
        await sm.close()


async def test_socket_mode_refresh_and_redelivery(slack: FakeSlack, world: World) -> None:
    deaf: asyncio.Queue[SocketModeRequest] = asyncio.Queue()
    first = await socket_client(slack, deaf, ack=False)
    message = await slack.post_message(world.bob, world.secret, "unacked")
    assert (await next_request(deaf)).retry_attempt == 0
    await first.close()
    await slack.wait_until(lambda: not slack.socket.open_connections(), "first socket closed")

    received: asyncio.Queue[SocketModeRequest] = asyncio.Queue()
    second = await socket_client(slack, received)
    try:
        again = await next_request(received)
        assert again.retry_attempt == 1 and again.retry_reason == "timeout"
        assert again.payload["event"]["ts"] == message.ts
        assert again.payload["event"]["channel_type"] == "group"
        await slack.socket.wait_acked()

        [before] = slack.socket.open_connections()
        await slack.socket.send_disconnect("refresh_requested")
        # The SDK asks for a new URL, closes the old socket and opens the new one.
        await slack.wait_until(lambda: [c.id for c in slack.socket.open_connections()]
                               == [before.id + 1], "a fresh Socket Mode connection")
        assert len(slack.calls("apps.connections.open")) == 3
        await slack.post_message(world.bob, world.general, "after refresh")
        assert (await next_request(received)).payload["event"]["text"] == "after refresh"
    finally:
        await second.close()


async def test_edit_delete_reaction_profile_event_shapes(slack: FakeSlack, world: World
                                                        ) -> None:
    slack.issue_token(world.bob)  # a second authorizing user must not duplicate events
    message = await slack.post_message(world.bob, world.general, "first")
    await slack.edit_message(world.bob, world.general, message.ts, "second")
    await slack.add_reaction(world.carol, world.general, message.ts, "wave")
    await slack.remove_reaction(world.carol, world.general, message.ts, "wave")
    reply = await slack.post_message(world.carol, world.general, "reply", thread_ts=message.ts)
    await slack.delete_message(world.general, reply.ts)
    await slack.update_user(world.bob, display_name="Robert")
    events = [p["event"] for p in slack.sent_events]
    kinds = [(e["type"], e.get("subtype")) for e in events]
    assert kinds == [("message", None), ("message", "message_changed"),
                     ("reaction_added", None), ("reaction_removed", None),
                     ("message", None), ("message", "message_deleted"), ("user_change", None)]
    changed = events[1]
    assert changed["message"]["ts"] == message.ts and changed["message"]["text"] == "second"
    assert changed["message"]["edited"] == {"user": world.bob.id, "ts": changed["ts"]}
    assert changed["previous_message"]["text"] == "first" and changed["hidden"] is True
    assert events[2]["item"] == {"type": "message", "channel": world.general.id,
                                 "ts": message.ts}
    assert events[2]["reaction"] == "wave" and events[2]["item_user"] == world.bob.id
    assert events[4]["thread_ts"] == message.ts
    assert events[5]["deleted_ts"] == reply.ts
    assert events[5]["previous_message"]["text"] == "reply"
    assert events[6]["user"]["profile"]["display_name"] == "Robert"
    # Nobody connected: Socket Mode keeps them for the first connection.
    assert len(slack.socket.unacked()) == 7


# ---- Events API over HTTP -------------------------------------------------------------------


async def test_events_api_over_http_is_signed(slack: FakeSlack, world: World,
                                              unused_tcp_port: int) -> None:
    app = slack.app
    verifier = SignatureVerifier(app.signing_secret)
    got: list[dict[str, Any]] = []
    failing = False

    async def endpoint(request: web.Request) -> web.Response:
        body = await request.read()
        if not verifier.is_valid_request(body, dict(request.headers)):
            return web.Response(status=401)
        data = json.loads(body)
        if data["type"] == "url_verification":
            return web.json_response({"challenge": data["challenge"]})
        if failing:
            return web.Response(status=500)
        got.append(data)
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/slack/events", endpoint)
    runner = web.AppRunner(receiver)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        app.socket_mode = False
        app.request_url = f"http://127.0.0.1:{unused_tcp_port}/slack/events"
        check = await slack.events_http.url_verification(app, challenge="c-123")
        assert check.status == 200 and json.loads(check.response_text)["challenge"] == "c-123"

        message = await slack.post_message(world.bob, world.general, "over http")
        assert got[0]["event"]["ts"] == message.ts
        delivery = slack.events_http.deliveries[-1]
        assert delivery.status == 200
        assert delivery.headers["X-Slack-Signature"].startswith("v0=")

        body = json.dumps(got[0]).encode()
        forged = await slack.events_http.post(app, body, signature="v0=" + "0" * 64)
        stale = await slack.events_http.post(app, body, timestamp=str(int(time.time()) - 600))
        assert (forged.status, stale.status) == (401, 401)

        # A failed delivery is retried (when the test says) with Slack's retry headers.
        failing = True
        await slack.post_message(world.bob, world.general, "retry me")
        assert slack.events_http.deliveries[-1].status == 500
        failing = False
        [retry] = await slack.events_http.retry_failed()
        assert retry.status == 200 and got[-1]["event"]["text"] == "retry me"
        assert (retry.headers["X-Slack-Retry-Num"], retry.headers["X-Slack-Retry-Reason"]) \
            == ("1", "http_error")
    finally:
        await runner.cleanup()


# ---- OAuth ------------------------------------------------------------------------------------


async def authorize(slack: FakeSlack, **query: str) -> aiohttp.ClientResponse:
    return await slack.visit_authorize(client_id=slack.app.client_id, **query)


async def test_oauth_v2_with_token_rotation(slack: FakeSlack, world: World) -> None:
    slack.app.redirect_uris.append(REDIRECT)
    slack.app.token_rotation = True
    slack.sign_in(world.bob)

    wrong = await authorize(slack, redirect_uri=REDIRECT + "/evil", state="s1",
                            user_scope="chat:write")
    assert wrong.status == 400
    redirected = await authorize(slack, redirect_uri=REDIRECT, state="s1",
                                 user_scope="chat:write,channels:history")
    assert redirected.status == 302
    target = URL(redirected.headers["Location"])
    assert str(target.with_query(None)) == REDIRECT and target.query["state"] == "s1"
    code = target.query["code"]

    anonymous = AsyncWebClient(base_url=slack.api_url)
    app = slack.app
    client_auth = {"client_id": app.client_id, "client_secret": app.client_secret}
    mismatch = anonymous.oauth_v2_access(code=code, redirect_uri=REDIRECT + "/other",
                                         **client_auth)
    assert await code_of(mismatch) == "bad_redirect_uri"  # and the code is spent

    code = URL((await authorize(slack, redirect_uri=REDIRECT, state="s2",
                                user_scope="chat:write"))
               .headers["Location"]).query["code"]
    assert await code_of(anonymous.oauth_v2_access(
        client_id=app.client_id, client_secret="nope", code=code, redirect_uri=REDIRECT)) \
        == "bad_client_secret"
    granted = await anonymous.oauth_v2_access(code=code, redirect_uri=REDIRECT, **client_auth)
    authed = granted["authed_user"]
    assert authed["id"] == world.bob.id and authed["token_type"] == "user"
    assert authed["access_token"].startswith("xoxe.xoxp-")
    assert authed["refresh_token"].startswith("xoxe-1-") and authed["expires_in"] == 43200
    assert authed["scope"] == "chat:write" and granted["team"]["id"] == world.team.id
    # The client credentials went as HTTP Basic, as the SDK sends them.
    assert slack.calls("oauth.v2.access")[-1].headers["Authorization"].startswith("Basic ")
    reused = anonymous.oauth_v2_access(code=code, redirect_uri=REDIRECT, **client_auth)
    assert await code_of(reused) == "invalid_code"

    refresh = {"grant_type": "refresh_token", "refresh_token": authed["refresh_token"]}
    rotated = await anonymous.oauth_v2_access(**refresh, **client_auth)
    assert rotated["token_type"] == "user"
    assert rotated["access_token"] != authed["access_token"]
    assert rotated["refresh_token"] != authed["refresh_token"]
    again = anonymous.oauth_v2_access(**refresh, **client_auth)
    assert await code_of(again) == "invalid_refresh_token"  # refresh tokens are single-use

    fresh = slack.web_client(rotated["access_token"])
    assert (await fresh.auth_test())["user_id"] == world.bob.id
    slack.advance_time(43_201)
    assert (await error_of(fresh.auth_test())).response["error"] == "token_expired"


async def test_oauth_refusals_on_the_authorize_page(slack: FakeSlack, world: World) -> None:
    slack.app.redirect_uris.append(REDIRECT)
    slack.sign_in(world.bob, consent=False)
    denied = await authorize(slack, redirect_uri=REDIRECT, state="s")
    assert URL(denied.headers["Location"]).query["error"] == "access_denied"
    slack.sign_in(None)
    nobody = await authorize(slack, redirect_uri=REDIRECT, state="s")
    assert nobody.status == 200 and nobody.content_type == "text/html"
