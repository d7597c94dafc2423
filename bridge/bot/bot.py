"""The management bot: a person DMs it, and that DM becomes their management room."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable

from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixError
from mautrix.types import (
    EventID,
    EventType,
    Membership,
    MessageType,
    RoomID,
    Serializable,
    StateEvent,
    TextMessageEventContent,
    UserID,
)

from ..db import ManagementRoomStore
from .commands import CommandContext, CommandError, CommandRegistry, split_command
from .permissions import Level, Permissions

log = logging.getLogger("relayforge.bot")

WELCOME = (
    "Hello! This is your RelayForge management room: send commands here without a prefix.\n"
    'Send "help" to see what I can do.'
)
NO_PERMISSION = (
    "Sorry, you are not allowed to use this bridge. "
    "Ask its administrator to give you access in bridge.permissions."
)


class ManagementBot:
    def __init__(
        self,
        intent: IntentAPI,
        management_rooms: ManagementRoomStore,
        permissions: Permissions,
        prefix: str,
        is_bridge_user: Callable[[UserID], bool],
    ) -> None:
        self.intent = intent
        self.management_rooms = management_rooms
        self.permissions = permissions
        self.prefix = prefix
        self.commands = CommandRegistry()
        # Called first for every message in a management room; True means "consumed" (a
        # password the bot asked for, say) and the message is not read as a command.
        self.interceptors: list[Callable[[RoomID, EventID, UserID, str], Awaitable[bool]]] = []
        # Called with the person's MXID when they get a management room (account set-up).
        self.on_new_management_room: list[Callable[[UserID], Awaitable[None]]] = []
        # Called with the sender once a message of theirs to the bot was handled (answered):
        # work that must not delay a first answer waits for it (a new person's spaces).
        self.after_message: list[Callable[[UserID], None]] = []
        # Ghosts and the bot itself never issue commands.
        self.is_bridge_user = is_bridge_user

    @property
    def mxid(self) -> UserID:
        return self.intent.mxid

    async def reply(self, room_id: RoomID, event_id: EventID | None, text: str) -> None:
        content = TextMessageEventContent(msgtype=MessageType.NOTICE, body=text)
        if event_id:
            content.set_reply(event_id)
        await self.intent.send_message(room_id, content)

    async def send_event(self, room_id: RoomID, event_type: EventType,
                         content: Serializable) -> None:
        await self.intent.send_message_event(room_id, event_type, content)

    async def tell(self, mxid: UserID, text: str) -> bool:
        """Send a notice to a person's management room; False if they have none yet."""
        room = await self.management_rooms.get(mxid)
        if room is None:
            log.info("Could not tell %s (no management room): %s", mxid, text)
            return False
        await self.reply(room, None, text)
        return True

    # ---- invites ---------------------------------------------------------------------------

    async def handle_invite(self, evt: StateEvent) -> None:
        inviter = evt.sender
        if self.is_bridge_user(inviter):
            return
        await self.intent.join_room_by_id(evt.room_id)
        if self.permissions.level_for(inviter) < Level.USER:
            log.info("Refusing invite from %s: no permission", inviter)
            await self.reply(evt.room_id, None, NO_PERMISSION)
            await self.intent.leave_room(evt.room_id, reason="Not allowed to use this bridge")
            return
        if await self._is_direct_chat(evt):
            await self.management_rooms.set(inviter, evt.room_id)
            log.info("Room %s is now the management room of %s", evt.room_id, inviter)
            await self.reply(evt.room_id, None, WELCOME)
            for hook in self.on_new_management_room:
                await hook(inviter)

    async def _is_direct_chat(self, evt: StateEvent) -> bool:
        if getattr(evt.content, "is_direct", False):
            return True
        # Clients that do not flag DMs: a room of just the two of us (joined or invited).
        try:
            members = await self.intent.get_members(evt.room_id)
        except MatrixError:
            return False
        present = {m.state_key for m in members
                   if m.content.membership in (Membership.JOIN, Membership.INVITE)}
        return present <= {self.mxid, evt.sender}

    # ---- commands --------------------------------------------------------------------------

    def command_text(self, text: str, in_management_room: bool) -> str | None:
        """The command in a message, or None when the message is not meant for the bot."""
        text = text.strip()
        if text == self.prefix or text.startswith(self.prefix + " "):
            return text[len(self.prefix):].strip()
        return text if in_management_room else None

    def addresses_bot(self, text: str) -> bool:
        return self.command_text(text, in_management_room=False) is not None

    async def handle_message(
        self, room_id: RoomID, event_id: EventID, sender: UserID, text: str
    ) -> None:
        if self.is_bridge_user(sender):
            return
        try:
            await self._handle_message(room_id, event_id, sender, text)
        finally:
            for hook in self.after_message:
                hook(sender)

    async def _handle_message(
        self, room_id: RoomID, event_id: EventID, sender: UserID, text: str
    ) -> None:
        managed = await self.management_rooms.get(sender) == room_id
        if managed:
            for intercept in self.interceptors:
                if await intercept(room_id, event_id, sender, text):
                    return
        command_text = self.command_text(text, managed)
        if command_text is None:
            return
        level = self.permissions.level_for(sender)
        if level < Level.USER:
            await self.reply(room_id, event_id, NO_PERMISSION)
            return
        args = split_command(command_text)
        if not args:
            args = ["help"]
        name, rest = args[0], args[1:]
        hint = "help" if managed else f"{self.prefix} help"
        command = self.commands.get(name)
        if command is None:
            await self.reply(room_id, event_id, f'Unknown command "{name}". Try "{hint}".')
            return
        if command.level > level:
            await self.reply(
                room_id, event_id,
                f'"{command.name}" needs the {command.level.name.lower()} permission level; '
                f"yours is {level.name.lower()}.",
            )
            return
        ctx = CommandContext(self, sender, room_id, event_id, level, rest, managed)
        try:
            await command.handler(ctx)
        except CommandError as e:
            await ctx.reply(str(e))
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("Command %r from %s failed (ref %s)", name, sender, ref)
            await ctx.reply(
                f'Something went wrong running "{name}". The bridge admin can find the '
                f"details in the log under reference {ref}."
            )

    async def handle_leave(self, evt: StateEvent) -> None:
        """Forget a management room its person left, so a stale room is never used."""
        if evt.content.membership not in (Membership.LEAVE, Membership.BAN):
            return
        if await self.management_rooms.get(UserID(evt.state_key)) == evt.room_id:
            await self.management_rooms.delete(UserID(evt.state_key))
