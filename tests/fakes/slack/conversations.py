"""conversations.* and users.conversations: listing what a person can see, reading history
and threads, joining, members, and opening DMs."""

from __future__ import annotations

from typing import Any

from .models import Channel, Message, SlackError, parse_ts
from .render import channel_json, message_json
from .web_api import SCOPE_FAMILY, Call, WebApi

TYPE_NAMES = {"public_channel": "public", "private_channel": "private", "im": "im",
              "mpim": "mpim"}


def _kinds(call: Call) -> list[str]:
    requested = [t.strip() for t in (call.arg("types") or "public_channel").split(",")
                 if t.strip()]
    kinds = []
    for name in requested:
        if name not in TYPE_NAMES:
            raise SlackError("invalid_types")
        kinds.append(TYPE_NAMES[name])
        call.need_scope(f"{SCOPE_FAMILY[TYPE_NAMES[name]]}:read")
    return kinds


def _window(call: Call, messages: list[Message]) -> list[Message]:
    """oldest/latest bounds, exclusive unless `inclusive`, as Slack applies them."""
    oldest = parse_ts(call.arg("oldest")) or 0
    latest = parse_ts(call.arg("latest"))
    inclusive = call.flag("inclusive")
    kept = []
    for message in messages:
        at = parse_ts(message.ts) or 0
        if at < oldest or (not inclusive and at == oldest and oldest):
            continue
        if latest is not None and (at > latest or (not inclusive and at == latest)):
            continue
        kept.append(message)
    return kept


def register(api: WebApi) -> None:
    state = api.state

    def listing(call: Call, members_only: bool) -> dict[str, Any]:
        kinds = _kinds(call)
        teams = call.teams_in_scope()
        viewer = call.user
        found = []
        for channel in state.channels.values():
            if channel.kind not in kinds or not state.can_see(viewer, channel):
                continue
            if channel.kind == "public" and channel.team not in teams:
                continue
            if members_only and viewer.id not in channel.members:
                continue
            if channel.is_archived and call.flag("exclude_archived"):
                continue
            found.append(channel)
        chunk, cursor = call.page(found, default=100, maximum=1000)
        now = int(state.now())
        return {"channels": [channel_json(c, viewer, now=now) for c in chunk],
                "response_metadata": {"next_cursor": cursor}}

    @api.method("conversations.list")
    async def conversations_list(call: Call) -> dict[str, Any]:
        return listing(call, members_only=False)

    @api.method("users.conversations")
    async def users_conversations(call: Call) -> dict[str, Any]:
        if call.arg("user") not in (None, call.user.id):
            # Listing someone else's conversations is outside what this fake models.
            raise SlackError("user_not_found")
        return listing(call, members_only=True)

    @api.method("conversations.info")
    async def conversations_info(call: Call) -> dict[str, Any]:
        channel = call.channel()
        call.need_conversation_scope(channel, "read")
        return {"channel": channel_json(channel, call.user, now=int(state.now()))}

    @api.method("conversations.members")
    async def conversations_members(call: Call) -> dict[str, Any]:
        channel = call.channel()
        call.need_conversation_scope(channel, "read")
        chunk, cursor = call.page(channel.members, default=100, maximum=1000)
        return {"members": chunk, "response_metadata": {"next_cursor": cursor}}

    def rendered(channel: Channel, messages: list[Message]) -> list[dict[str, Any]]:
        return [message_json(m, channel, state.base_url) for m in messages]

    @api.method("conversations.history")
    async def conversations_history(call: Call) -> dict[str, Any]:
        channel = call.channel()
        call.need_conversation_scope(channel, "history")
        # The channel's timeline: top-level messages and replies also sent to the channel.
        visible = [m for m in channel.messages if not m.is_reply or m.reply_broadcast]
        newest_first = list(reversed(_window(call, visible)))
        chunk, cursor = call.page(newest_first, default=100, maximum=999)
        body: dict[str, Any] = {"messages": rendered(channel, chunk), "has_more": bool(cursor),
                                "pin_count": 0, "channel_actions_ts": None,
                                "channel_actions_count": 0}
        if cursor:
            body["response_metadata"] = {"next_cursor": cursor}
        return body

    @api.method("conversations.replies")
    async def conversations_replies(call: Call) -> dict[str, Any]:
        channel = call.channel()
        call.need_conversation_scope(channel, "history")
        message = channel.find(call.require("ts"))
        if message is None:
            raise SlackError("thread_not_found")
        root = channel.find(message.thread_ts) if message.is_reply else message
        assert root is not None
        # The parent always comes first, then the replies in the requested window.
        thread = [root, *_window(call, channel.replies(root.ts))]
        chunk, cursor = call.page(thread, default=1000, maximum=1000)
        return {"messages": rendered(channel, chunk), "has_more": bool(cursor),
                "response_metadata": {"next_cursor": cursor}}

    @api.method("conversations.join", scope="channels:write")
    async def conversations_join(call: Call) -> dict[str, Any]:
        channel = call.channel()
        joined, _ = state.join(call.user, channel)
        body: dict[str, Any] = {"channel": channel_json(channel, call.user,
                                                        now=int(state.now()))}
        if not joined:
            body.update(warning="already_in_channel",
                        response_metadata={"warnings": ["already_in_channel"]})
        return body

    @api.method("conversations.open")
    async def conversations_open(call: Call) -> dict[str, Any]:
        if call.arg("channel"):
            channel = call.channel()
        else:
            ids = [i.strip() for i in call.require("users").split(",") if i.strip()]
            others = [state.user_for(call.user, i) for i in ids]
            if len(others) == 1:
                call.need_scope("im:write")
                channel = state.open_dm(call.user, others[0])
            else:
                call.need_scope("mpim:write")
                people = [call.user, *[o for o in others if o is not call.user]]
                channel = state.open_group_dm(people)
        body = channel_json(channel, call.user, now=int(state.now()))
        return {"channel": body if call.flag("return_im") else {"id": channel.id},
                "no_op": False, "already_open": False}
