"""The MCP tools an agent calls: read the person's profiles, rooms and messages, search, and
act (send, reply, edit, delete, react) through `acts.py`, each within what it was granted.

Every call finds its agent afresh from its access token (the endpoint already refused a bad,
expired or revoked one with 401), so a revocation or a persona's pause applies to the very
next call. Refusals are tool errors that say what was refused and what to do.
"""

from __future__ import annotations

import json
from typing import Any

from mautrix.appservice import IntentAPI
from mautrix.types import EventType, MessageEvent, PaginationDirection, RoomID
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from ..audit import AuditEvent, AuditLog
from ..core.authority import AgentActor
from ..db import Portal, Storage
from ..db.agent import AgentGrant
from ..db.persona import PersonaStatus
from ..matrix.ghosts import Ghosts
from ..security.permissions import Permissions
from ..security.ratelimit import Bucket, RateLimiter
from .acts import AGENT_KEY, ActRefused, AgentActs, Outcome
from .oauth import AgentAuthorization

INSTRUCTIONS = (
    "RelayForge bridges this person's chat accounts (Slack, XMPP, ...) into Matrix. List "
    "profiles and rooms first; rooms are named by their Matrix room id. What you send goes "
    "out as the person, through the bridge's policy and the person's rules; your first "
    "message into each room waits until the person confirms it in Matrix.")


class AgentTools:
    def __init__(self, storage: Storage, authorization: AgentAuthorization, acts: AgentActs,
                 bot: IntentAPI, ghosts: Ghosts, audit: AuditLog, calls_per_minute: int,
                 sends_per_minute: int, permissions: Permissions) -> None:
        self.storage = storage
        self.authorization = authorization
        self.acts = acts
        self.bot = bot
        self.ghosts = ghosts
        self.audit = audit
        self.calls = RateLimiter(Bucket(calls_per_minute, calls_per_minute))
        self.sends = RateLimiter(Bucket(sends_per_minute, sends_per_minute))
        self.permissions = permissions

    # ---- who is calling ----------------------------------------------------------------------

    async def _agent(self, ctx: Context, scope: str | None
                     ) -> tuple[AgentGrant, str, tuple[str, ...]]:
        """The calling agent's grant, its person's Matrix user and its token's scopes, or a
        tool error. With a `scope`, a token without it is refused here; `_act` checks it
        itself, to audit the refusal."""
        header = (ctx.headers or {}).get("authorization", "")
        token = header.partition(" ")[2].strip()
        access = await self.authorization.load_access_token(token) if token else None
        grant = await self.storage.agents.grant(access.subject or "") if access else None
        if access is None or grant is None or not grant.active:
            raise ToolError("Your access was revoked or has expired: authorise again.")
        wait = self.calls.take(grant.id)
        if wait:
            raise ToolError(f"Too many calls: wait {wait:.0f} s before the next one.")
        if scope is not None and scope not in access.scopes:
            raise ToolError(_not_granted(scope))
        person = await self.storage.agents.matrix_user(grant.account_id)
        if person is None:
            raise ToolError("Your person has no Matrix account on this bridge any more.")
        # Checked on every call: the admin's bridge.permissions can change under a grant.
        refused = Permissions.refusal("agents", person, self.permissions.level_for(person))
        if refused is not None:
            raise ToolError(refused)
        await self.storage.agents.touch(grant.id)
        return grant, person, tuple(access.scopes)

    def _actor(self, grant: AgentGrant) -> AgentActor:
        return AgentActor(grant.id, grant.name, grant.account_id, frozenset(grant.actions),
                          frozenset(grant.profile_ids), frozenset(grant.networks))

    async def _rooms(self, grant: AgentGrant) -> list[dict[str, Any]]:
        """The portal rooms the agent may see: in its profiles and networks, and of a
        linked account that is not paused."""
        active = set()
        for profile_id in grant.profile_ids:
            for persona in await self.storage.personas.for_profile(profile_id):
                if persona.status == PersonaStatus.ACTIVE and persona.platform in grant.networks:
                    active.add((profile_id, persona.platform))
        return [r for r in await self.storage.agents.portals_of(grant.account_id)
                if (r["profile_id"], r["network"]) in active]

    async def _portal(self, grant: AgentGrant, room: str) -> Portal:
        if not any(r["mxid"] == room for r in await self._rooms(grant)):
            raise ToolError(f"{room} is not one of the rooms you may use (see list_rooms); a "
                            "paused account's rooms are not available.")
        portal = await self.storage.portals.get_by_mxid(RoomID(room))
        if portal is None:
            raise ToolError(f"{room} is no longer bridged.")
        return portal

    # ---- reading -----------------------------------------------------------------------------

    async def list_profiles(self, ctx: Context) -> list[dict[str, Any]]:
        """The person's profiles you were granted, with their linked accounts."""
        grant, _, _ = await self._agent(ctx, "read")
        result = []
        for profile in await self.storage.profiles.for_account(grant.account_id):
            if profile.id not in grant.profile_ids:
                continue
            personas = [{"network": p.platform, "id": p.external_user_id,
                         "status": p.status.value}
                        for p in await self.storage.personas.for_profile(profile.id)
                        if p.platform in grant.networks]
            result.append({"profile": profile.name, "accounts": personas})
        return result

    async def list_rooms(self, ctx: Context, profile: str | None = None,
                         network: str | None = None) -> list[dict[str, Any]]:
        """Bridged rooms you may read and act in, optionally of one profile or network."""
        grant, _, _ = await self._agent(ctx, "read")
        names = {p.id: p.name for p in await self.storage.profiles.for_account(
            grant.account_id)}
        return [{"room": r["mxid"], "network": r["network"], "remote_id": r["remote_id"],
                 "name": r["name"], "profile": names.get(r["profile_id"])}
                for r in await self._rooms(grant)
                if (profile is None or names.get(r["profile_id"], "").lower()
                    == profile.lower()) and (network is None or r["network"] == network)]

    async def read_messages(self, ctx: Context, room: str, limit: int = 20
                            ) -> list[dict[str, Any]]:
        """The latest messages of a room, oldest first, with senders, their network ids,
        replies and threads. Message ids are Matrix event ids."""
        grant, person, _ = await self._agent(ctx, "read")
        portal = await self._portal(grant, room)
        return await self._messages(portal, person, max(1, min(limit, 100)))

    async def _messages(self, portal: Portal, person: str, limit: int
                        ) -> list[dict[str, Any]]:
        page = await self.bot.get_messages(RoomID(portal.mxid or ""),
                                           PaginationDirection.BACKWARD, limit=limit)
        template = self.ghosts.templates.get(portal.network)
        found = []
        for evt in reversed(page.events):
            if not isinstance(evt, MessageEvent) or evt.type != EventType.ROOM_MESSAGE:
                continue
            content = evt.content
            if content.get_edit():
                continue
            sender, remote_sender, via = str(evt.sender), None, None
            tag = content.get(AGENT_KEY) if hasattr(content, "get") else None
            if evt.sender == self.bot.mxid and isinstance(tag, dict):
                sender, via = str(tag.get("for")), str(tag.get("name"))
            elif evt.sender == self.bot.mxid:
                continue  # the bridge's own notices are not messages of the room
            elif template is not None and template.remote_id(evt.sender) is not None:
                remote_sender = template.remote_id(evt.sender)
            relates = content.relates_to
            found.append({
                "id": evt.event_id, "sender": sender, "network_sender": remote_sender,
                "is_you": sender == person, "via_agent": via, "text": _text(content, via),
                "reply_to": (relates.in_reply_to.event_id
                             if relates and relates.in_reply_to else None),
                "thread_root": (relates.event_id if relates and relates.rel_type
                                and relates.rel_type.value == "m.thread" else None),
                "timestamp_ms": evt.timestamp})
        return found

    async def search(self, ctx: Context, query: str, room: str | None = None,
                     limit: int = 20) -> list[dict[str, Any]]:
        """Messages containing the text (case-insensitive) among the latest 100 of each
        room you may read, or of one room."""
        grant, person, _ = await self._agent(ctx, "read")
        needle = query.strip().lower()
        if not needle:
            raise ToolError("Give some text to search for.")
        rooms = [await self._portal(grant, room)] if room else [
            p for r in await self._rooms(grant)
            if (p := await self.storage.portals.get_by_mxid(RoomID(r["mxid"]))) is not None]
        hits = []
        for portal in rooms:
            for message in await self._messages(portal, person, 100):
                if needle in (message["text"] or "").lower():
                    hits.append({**message, "room": portal.mxid})
        return hits[-max(1, min(limit, 100)):]

    # ---- acting ------------------------------------------------------------------------------

    async def _act(self, ctx: Context, scope: str, room: str, what: str, run: Any
                   ) -> dict[str, Any]:
        grant, person, scopes = await self._agent(ctx, None)
        wait = self.sends.take(grant.id)
        if wait:
            raise ToolError(f"Too many sends: wait {wait:.0f} s before the next one.")
        try:
            if scope not in scopes:
                raise ActRefused(_not_granted(scope))
            try:
                portal = await self._portal(grant, room)
            except ToolError as e:
                raise ActRefused(str(e)) from e
            outcome: Outcome = await run(person, portal, self._actor(grant))
        except ActRefused as e:
            # Every refused act is in the person's audit trail, under the agent's name.
            await self.audit.append(AuditEvent.AGENT, actor=grant.account_id,
                                    account=grant.account_id,
                                    details={"change": "refused", "agent": grant.name,
                                             "agent_id": grant.id, "action": what,
                                             "room": room, "reason": str(e)[:200]})
            raise ToolError(str(e)) from e
        return _reported(outcome, what)

    async def send_message(self, ctx: Context, room: str, text: str,
                           reply_to: str | None = None, thread_root: str | None = None
                           ) -> dict[str, Any]:
        """Send a message as the person into a room; optionally as a reply to a message
        id, or in the thread of a message id."""
        return await self._act(ctx, "send", room, "message", lambda person, portal, agent:
                               self.acts.send(person, portal, agent, text, reply_to,
                                              thread_root))

    async def edit_message(self, ctx: Context, room: str, message_id: str, text: str
                           ) -> dict[str, Any]:
        """Replace the text of a message sent as the person."""
        return await self._act(ctx, "edit", room, "edit", lambda person, portal, agent:
                               self.acts.edit(person, portal, agent, message_id, text))

    async def delete_message(self, ctx: Context, room: str, message_id: str
                             ) -> dict[str, Any]:
        """Delete a message sent as the person."""
        return await self._act(ctx, "delete", room, "deletion", lambda person, portal, agent:
                               self.acts.delete(person, portal, agent, message_id))

    async def react(self, ctx: Context, room: str, message_id: str, emoji: str
                    ) -> dict[str, Any]:
        """React to a message as the person."""
        return await self._act(ctx, "react", room, "reaction", lambda person, portal, agent:
                               self.acts.react(person, portal, agent, message_id, emoji))

    def server(self, **kwargs: Any) -> MCPServer:
        server: MCPServer = MCPServer(name="relayforge", instructions=INSTRUCTIONS, **kwargs)
        for tool in (self.list_profiles, self.list_rooms, self.read_messages, self.search,
                     self.send_message, self.edit_message, self.delete_message, self.react):
            server.add_tool(tool, name=tool.__name__, description=tool.__doc__)

        # The same reads as resources, for clients that attach context by URI.
        @server.resource("relayforge://rooms/{room}/messages", mime_type="application/json",
                         description="The latest messages of a room (see read_messages)")
        async def room_messages(room: str, ctx: Context) -> str:
            return json.dumps(await self.read_messages(ctx, room))

        @server.resource("relayforge://profiles/{profile}/rooms", mime_type="application/json",
                         description="A profile's rooms you may use (see list_rooms)")
        async def profile_rooms(profile: str, ctx: Context) -> str:
            return json.dumps(await self.list_rooms(ctx, profile=profile))

        return server


def _not_granted(scope: str) -> str:
    return (f"You were not granted {scope}; the person can authorise you again with it.")


def _text(content: Any, via: str | None) -> str | None:
    body = getattr(content, "body", None)
    if via and body:
        # The bridge's copy says who wrote it; the agent reads the message itself.
        for prefix in (f"{via} (agent of ",):
            if body.startswith(prefix) and "): " in body:
                return body.split("): ", 1)[1]
    return body


def _reported(outcome: Outcome, what: str) -> dict[str, Any]:
    if outcome.status == "sent":
        return {"status": "sent", "id": outcome.event_id, "network_id": outcome.detail}
    if outcome.status == "done":
        if what == "message":
            raise ToolError("The bridge did not send it; the reason is in the room.")
        return {"status": "done"}
    if outcome.status == "held":
        return {"status": "held", "id": outcome.event_id,
                "message": "This is your first message into this room: it waits until the "
                "person sends \"confirm\" in their management room (or \"cancel\"). Do not "
                "send it again."}
    if outcome.status == "failed":
        raise ToolError(f"It could not be delivered: {outcome.detail}. The person can send "
                        "\"retry\" in their management room.")
    if outcome.status == "parked":
        return {"status": "waiting", "message": f"It waits for the person to relink the "
                f"account ({outcome.detail}); it will be sent then."}
    return {"status": "queued", "message": "Queued: the network is slow or down, and the "
            f"bridge keeps trying ({outcome.detail or 'no answer yet'}). Do not send it again."}
