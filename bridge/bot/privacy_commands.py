"""`my-data` and `forget-me`: a person's own data, from their management room."""

from __future__ import annotations

import json
import logging
import time

from mautrix.errors import MatrixError
from mautrix.types import (
    EventID,
    FileInfo,
    MediaMessageEventContent,
    MessageType,
    RoomID,
    UserID,
)

from ..compliance.forget import ForgetRefused, Forgetting
from ..compliance.my_data import PersonalData
from ..identity.accounts import Accounts
from .bot import ManagementBot
from .commands import Command, CommandContext, CommandError
from .permissions import ACTION_LEVELS

log = logging.getLogger("relayforge.bot.privacy")
SECTION = "Account"
CONFIRM_SECONDS = 300
#: What the person types, exactly, as the second confirmation.
PHRASE = "forget me and delete my data"


class PrivacyCommands:
    def __init__(self, bot: ManagementBot, accounts: Accounts, personal_data: PersonalData,
                 forgetting: Forgetting) -> None:
        self.bot = bot
        self.accounts = accounts
        self.personal_data = personal_data
        self.forgetting = forgetting
        # Who is being asked to confirm forget-me: (step, deadline). In memory on purpose:
        # after a restart the person starts again.
        self._asked: dict[UserID, tuple[int, float]] = {}

    def register(self) -> None:
        add = self.bot.commands.add
        add(Command("my-data", SECTION, "Get everything the bridge holds about you, as a "
                    "JSON file", self.my_data, level=ACTION_LEVELS["my_data"]))
        add(Command("forget-me", SECTION, "Delete everything the bridge holds about you "
                    "(asks twice)", self.forget_me, level=ACTION_LEVELS["forget"]))
        self.bot.interceptors.append(self.answer)

    async def my_data(self, ctx: CommandContext) -> None:
        if not ctx.in_management_room:
            raise CommandError("Ask for your data in your management room (a DM with me).")
        account = await self.accounts.for_matrix_user(ctx.sender)
        document = await self.personal_data.export(account.id, actor=ctx.sender)
        data = json.dumps(document, indent=2, ensure_ascii=False).encode()
        filename = "relayforge-my-data.json"
        mxc = await self.bot.intent.upload_media(data, mime_type="application/json",
                                                 filename=filename)
        await self.bot.intent.send_message(ctx.room_id, MediaMessageEventContent(
            msgtype=MessageType.FILE, body=filename, url=mxc,
            info=FileInfo(mimetype="application/json", size=len(data))))
        await ctx.reply(f"Here is everything RelayForge holds about you ({filename}: your "
                        f"account, profiles, linked accounts without their credentials, rules, "
                        f"capabilities and {len(document['audit'])} audit records).")

    async def forget_me(self, ctx: CommandContext) -> None:
        if not ctx.in_management_room:
            raise CommandError("Use forget-me in your management room (a DM with me).")
        account = await self.accounts.for_matrix_user(ctx.sender)
        refusal = await self.forgetting.refusal(account.id)
        if refusal is not None:
            raise CommandError(refusal)
        self._asked[ctx.sender] = (1, time.monotonic() + CONFIRM_SECONDS)
        await ctx.reply(
            "This deletes everything RelayForge holds about you and cannot be undone: every "
            "linked account is revoked and unlinked, its credentials and your profiles' keys "
            "are destroyed, your rules, capabilities and message maps are deleted, and your "
            "name in the audit log is replaced by a pseudonym. Rooms stay in Matrix.\n"
            "Are you sure? Reply yes to go on, anything else to stop.")

    async def answer(self, room_id: RoomID, event_id: EventID, sender: UserID,
                     text: str) -> bool:
        asked = self._asked.pop(sender, None)
        if asked is None:
            return False
        step, deadline = asked
        if time.monotonic() > deadline:
            await self.bot.reply(room_id, None, 'That took too long; nothing was deleted. '
                                 'Send "forget-me" again to start over.')
            return True
        if step == 1:
            if text.strip().lower() != "yes":
                await self.bot.reply(room_id, None, "Stopped: nothing was deleted.")
                return True
            self._asked[sender] = (2, time.monotonic() + CONFIRM_SECONDS)
            await self.bot.reply(room_id, None, f"To confirm, send exactly: {PHRASE}")
            return True
        if text.strip() != PHRASE:
            await self.bot.reply(room_id, None, "That was not the phrase: nothing was "
                                 "deleted.")
            return True
        account = await self.accounts.for_matrix_user(sender)
        try:
            done = await self.forgetting.forget(account.id, actor=sender)
        except ForgetRefused as e:
            await self.bot.reply(room_id, None, str(e))
            return True
        except Exception:
            log.exception("forget-me failed part way")
            await self.bot.reply(room_id, None, "Deleting your data stopped part way because "
                                 'of an error. Send "forget-me" again to finish it.')
            return True
        await self.bot.reply(room_id, None, (
            f"Done. {done.personas} linked account(s) revoked and unlinked, their credentials "
            f"and {done.data_keys} data key(s) destroyed, {done.rows_deleted} records deleted; "
            f"your {done.audit_records} audit records now name you {done.pseudonym}. If you "
            "write to me again (in a new chat) you start as someone new."))
        try:
            # The room was their management room; its cached state went with their data.
            await self.bot.intent.leave_room(room_id, reason="forget-me")
        except MatrixError as e:
            log.warning("Could not leave a forgotten person's management room: %s", e)
        return True
