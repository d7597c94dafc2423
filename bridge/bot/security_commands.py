"""Security commands: capabilities (allow, deny, capabilities) and MFA (mfa setup|verify)."""

from __future__ import annotations

import logging

from mautrix.api import HTTPAPI, Method, Path
from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixError
from mautrix.types import (
    EventID,
    EventType,
    ImageInfo,
    MediaMessageEventContent,
    MessageType,
    RoomID,
    Serializable,
    TextMessageEventContent,
    UserID,
)

from .. import words
from ..identity.accounts import Accounts
from ..identity.errors import IdentityError
from ..security.capabilities import USAGE, Capabilities, CapabilityRefused
from ..security.mfa import Mfa, MfaRefused
from .bot import ManagementBot
from .commands import Command, CommandContext, CommandError

log = logging.getLogger("relayforge.bot.security")
SECTION = "Security"


async def qr_image(intent: IntentAPI, png: bytes, size: int, filename: str,
                   body: str | None = None) -> MediaMessageEventContent:
    """A QR code PNG uploaded to the homeserver, as the m.image the bot posts (MFA set-up,
    a network's QR login). `body`: the words shown where the image is not (the link it
    encodes); the file name by default."""
    mxc = await intent.upload_media(png, mime_type="image/png", filename=filename)
    return MediaMessageEventContent(
        msgtype=MessageType.IMAGE, body=body or filename, url=mxc,
        filename=filename if body else None,
        info=ImageInfo(mimetype="image/png", size=len(png), width=size, height=size))


class SecurityCommands:
    def __init__(self, bot: ManagementBot, accounts: Accounts, capabilities: Capabilities,
                 mfa: Mfa) -> None:
        self.bot = bot
        self.accounts = accounts
        self.capabilities = capabilities
        self.mfa = mfa
        # The messages that showed a person's new TOTP secret, removed once it is confirmed.
        # In memory on purpose: after a restart they stay, and the person can remove them.
        self._shown: dict[str, tuple[RoomID, list[EventID]]] = {}

    def register(self) -> None:
        add = self.bot.commands.add
        add(Command("allow", SECTION, "Allow RelayForge to act as you (within the policy)",
                    self.change("allow"), usage="PROFILE ACTIONS on NETWORK[/WORKSPACE/CHANNEL]"))
        add(Command("deny", SECTION, "Forbid RelayForge to act as you somewhere",
                    self.change("deny"), usage="PROFILE ACTIONS on NETWORK[/WORKSPACE/CHANNEL]"))
        add(Command("capabilities", SECTION, "What RelayForge may do as you",
                    self.list_capabilities, usage="[remove ID]"))
        add(Command("mfa", SECTION, "Multi-factor authentication (needed for high-risk "
                    "accounts)", self.run_mfa, usage="setup | verify CODE"))

    # ---- capabilities ----------------------------------------------------------------------

    def change(self, effect: str):
        async def run(ctx: CommandContext) -> None:
            args, persona_ref = list(ctx.args), None
            if "--persona" in args:
                at = args.index("--persona")
                if at + 1 >= len(args):
                    raise CommandError("--persona needs PLATFORM:ID (see \"personas\").")
                persona_ref = args[at + 1]
                del args[at:at + 2]
            agent = None
            if "--agent" in args:  # a rule for one of the person's agents (see "agents")
                at = args.index("--agent")
                if at + 1 >= len(args):
                    raise CommandError("--agent needs the agent's NAME (see \"agents\").")
                agent = args[at + 1]
                del args[at:at + 2]
            lowered = [a.lower() for a in args]
            if "on" not in lowered or lowered.index("on") < 2 or lowered.index("on") != (
                    len(args) - 2):
                raise CommandError(f"Usage: {USAGE}")
            on = lowered.index("on")
            account = await self.accounts.for_matrix_user(ctx.sender)
            try:
                persona = (await self.accounts.find_persona(account.id, persona_ref)
                           if persona_ref else None)
                rule = await self.capabilities.change(
                    account.id, ctx.sender, effect, args[0], " ".join(args[1:on]),
                    args[on + 1], persona, agent)
            except (IdentityError, CapabilityRefused) as e:
                raise CommandError(str(e)) from e
            await ctx.reply(words.capability_changed(effect, rule.actions, args[0],
                                                     args[on + 1], rule.id, agent))

        return run

    async def list_capabilities(self, ctx: CommandContext) -> None:
        account = await self.accounts.for_matrix_user(ctx.sender)
        if ctx.args[:1] == ["remove"] and len(ctx.args) == 2:
            try:
                rule = await self.capabilities.remove(account.id, ctx.sender, ctx.args[1])
            except CapabilityRefused as e:
                raise CommandError(str(e)) from e
            await ctx.reply(words.capability_removed(rule.id))
            return
        if ctx.args:
            raise CommandError("Usage: capabilities [remove ID]")
        await ctx.reply(await self.capabilities.describe(account.id))

    # ---- MFA -------------------------------------------------------------------------------

    async def run_mfa(self, ctx: CommandContext) -> None:
        verb = ctx.args[0].lower() if ctx.args else "status"
        account = await self.accounts.for_matrix_user(ctx.sender)
        if verb == "setup" and len(ctx.args) == 1:
            await self._setup(ctx, account.id)
        elif verb == "verify" and len(ctx.args) >= 2:
            try:
                enrolled, text = await self.mfa.verify(account.id, "".join(ctx.args[1:]),
                                                       ctx.sender)
            except MfaRefused as e:
                raise CommandError(str(e)) from e
            if enrolled:  # before the reply, so the secret is gone once it is read
                await self._hide_setup(ctx.sender)
            await ctx.reply(text)
        elif verb == "status" and len(ctx.args) <= 1:
            missing = await self.mfa.missing_check(account.id)
            await ctx.reply("MFA: " + (
                "set up, and verified within the last few minutes." if missing is None
                else "set up; mfa verify CODE before linking a high-risk account."
                if await self.mfa.enrolled(account.id)
                else "not set up. Send \"mfa setup\" to set it up."))
        else:
            raise CommandError("Usage: mfa setup | mfa verify CODE")

    async def _setup(self, ctx: CommandContext, account_id: str) -> None:
        if not ctx.in_management_room:
            raise CommandError("Set up MFA in your management room (a DM with me): its secret "
                               "must not go to a shared room.")
        try:
            enrolment = await self.mfa.setup(account_id, ctx.sender)
        except MfaRefused as e:
            raise CommandError(str(e)) from e
        text = TextMessageEventContent(msgtype=MessageType.NOTICE, body=(
            "Scan this QR code with your authenticator app, or open this link on the device "
            f"that has it:\n{enrolment.uri}\nThen send: mfa verify CODE (the 6 digits it "
            "shows). I remove these two messages once you have verified."))
        image = await qr_image(self.bot.intent, enrolment.qr_png, enrolment.qr_size,
                               "relayforge-mfa.png")
        shown = [await self._send_secret(ctx.room_id, text),
                 await self._send_secret(ctx.room_id, image)]
        self._shown[ctx.sender] = (ctx.room_id, shown)

    async def _send_secret(self, room_id: RoomID, content: Serializable) -> EventID:
        """Send a message without its body reaching the debug log (it carries the secret)."""
        api = self.bot.intent.api
        path = Path.v3.rooms[room_id].send[EventType.ROOM_MESSAGE][api.get_txn_id()]
        response = await HTTPAPI.request(api, Method.PUT, path, content.serialize(),
                                         query_params={"user_id": self.bot.mxid},
                                         sensitive=True)
        return EventID(response["event_id"])

    async def _hide_setup(self, sender: UserID) -> None:
        room_id, events = self._shown.pop(sender, (None, []))
        for event_id in events:
            try:
                await self.bot.intent.redact(RoomID(room_id), event_id,
                                             reason="MFA secret, no longer needed here")
            except MatrixError as e:
                log.warning("Could not remove an MFA set-up message in %s: %s", room_id,
                            e.message)
