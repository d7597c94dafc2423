"""Commands shared by every network: link, personas, map, rules, unmap."""

from __future__ import annotations

import hashlib
import logging

from mautrix.errors import MatrixError
from mautrix.types import Event, EventID, MessageEvent, RoomID, UserID

from .. import words
from ..audit import AuditEvent, AuditLog
from ..config import known_networks
from ..core.delivery import Delivery
from ..core.linking import LinkDone, Linking, LinkRefused
from ..core.mapping import MappingRules, RuleRefused
from ..core.matrix_side import PortalDirectory
from ..db import Storage
from ..db.first_send import HeldSend
from ..identity.accounts import Accounts
from ..identity.errors import IdentityError
from ..networks.login import LoginStep
from ..security.mfa import qr_png
from .bot import ManagementBot
from .commands import Command, CommandContext, CommandError, Level
from .link_prompts import LinkPrompts
from .permissions import ACTION_LEVELS
from .security_commands import qr_image

log = logging.getLogger("relayforge.bot.link")
SECTION = "Networks"
PROMPT_SECONDS = 300


def _options(args: list[str], flags: set[str], valued: set[str]
             ) -> tuple[list[str], dict[str, str | bool]]:
    """Split `--flag` and `--key value` options from positional arguments."""
    positional, options = [], {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in flags:
            options[arg[2:]] = True
        elif arg in valued:
            if i + 1 >= len(args):
                raise CommandError(f"{arg} needs a value.")
            options[arg[2:]] = args[i + 1]
            i += 1
        elif arg.startswith("--"):
            raise CommandError(f'Unknown option "{arg}".')
        else:
            positional.append(arg)
        i += 1
    return positional, options


class NetworkCommands:
    def __init__(self, bot: ManagementBot, storage: Storage, accounts: Accounts,
                 linking: Linking, rules: MappingRules, portals: PortalDirectory,
                 audit: AuditLog, delivery: Delivery) -> None:
        self.portals = portals
        self.delivery = delivery
        self.audit = audit
        self.bot = bot
        self.storage = storage
        self.accounts = accounts
        self.linking = linking
        self.rules = rules
        # What the bot has asked for: the person's next message in their management room.
        # In the database, as any worker may get that message (the flow id sealed in it).
        self.prompts = LinkPrompts(storage.one_time, linking.vault)
        # The login QR image posted last to each person: (room, event, a hash of what it
        # encodes). Kept with the pending question too, for the worker that gets the answer.
        self._qr_shown: dict[str, tuple[str, str, str]] = {}

    def register(self) -> None:
        add = self.bot.commands.add
        # The levels are the shared table's, so the API and pages ask the same of a person.
        add(Command("link", SECTION, "Link your account on a network (proof of ownership)",
                    self.link, usage="NETWORK [ADDRESS] [--profile NAME]",
                    level=ACTION_LEVELS["link"]))
        add(Command("relink", SECTION, words.PERSONA_ACTIONS["relink"], self.relink,
                    usage="PLATFORM:ID", level=ACTION_LEVELS["link"]))
        add(Command("retry", SECTION, "Send again what could not be delivered", self.retry))
        add(Command("personas", SECTION, "List your linked accounts and their status",
                    self.personas, level=ACTION_LEVELS["personas"]))
        add(Command("map", SECTION, "Bridge a remote room into a profile (--room: a room "
                    "you are in and may change)", self.map,
                    usage="NETWORK ROOM [--profile NAME] [--room !ID] [--inbound-only] "
                    "[--relay]", level=ACTION_LEVELS["map"]))
        add(Command("rules", SECTION, "List your mapping rules", self.list_rules,
                    level=ACTION_LEVELS["rules"]))
        add(Command("unmap", SECTION, "Remove a mapping rule", self.unmap, usage="RULE",
                    level=ACTION_LEVELS["rules"]))
        for action in ("pause", "resume", "revoke"):
            add(Command(action, SECTION, words.PERSONA_ACTIONS[action],
                        self._state_command(action),
                        usage="PLATFORM:ID", level=ACTION_LEVELS["personas"]))
        add(Command("confirm-first", SECTION, "Ask before your first message into each "
                    "remote room", self.confirm_first, usage="on|off [--profile NAME]"))
        add(Command("confirm", SECTION, "Send your held first message", self.confirm))
        add(Command("cancel", SECTION, "Drop your held first message", self.cancel))
        self.bot.interceptors.append(self.answer_prompt)
        self.linking.on_oauth_step.append(self._oauth_step)

    async def _default_profile(self, account_id: str) -> str:
        profiles = await self.storage.profiles.for_account(account_id)
        return profiles[0].name

    async def link(self, ctx: CommandContext) -> None:
        if not ctx.in_management_room:
            raise CommandError("Link accounts in your management room (a DM with me): "
                               "passwords must not go to a shared room.")
        positional, options = _options(ctx.args, set(), {"--profile"})
        if not positional:
            networks = ", ".join(self.linking.networks()) or "none"
            raise CommandError(f"Usage: link NETWORK [ADDRESS] [--profile NAME]. "
                               f"Networks: {networks}")
        network = positional[0].lower()
        if network not in self.linking.networks():
            raise CommandError(_network_off(network, ctx.level, list(self.linking.networks())))
        account = await self.accounts.for_matrix_user(ctx.sender)
        profile = str(options.get("profile") or await self._default_profile(account.id))
        try:
            flow_id, step = await self.linking.start(
                account.id, network, positional[1] if len(positional) > 1 else None, profile,
                requester=ctx.sender)
        except LinkRefused as e:
            raise CommandError(str(e)) from e
        await self._show_step(ctx.sender, account.id, ctx.room_id, flow_id, step)

    async def relink(self, ctx: CommandContext) -> None:
        if len(ctx.args) != 1:
            raise CommandError('Usage: relink PLATFORM:ID (see "personas")')
        account = await self.accounts.for_matrix_user(ctx.sender)
        try:
            persona = await self.accounts.find_persona(account.id, ctx.args[0])
        except IdentityError as e:
            raise CommandError(str(e)) from e
        profile = next(p for p in await self.storage.profiles.for_account(account.id)
                       if p.id == persona.profile_id)
        ctx.args = [persona.platform, persona.external_user_id, "--profile", profile.name]
        await self.link(ctx)

    async def retry(self, ctx: CommandContext) -> None:
        rooms = await self.delivery.retry(ctx.sender)
        if not rooms:
            raise CommandError("Nothing of yours is waiting to be sent again.")
        await ctx.reply(f"Sending again what was not delivered, in {rooms} room(s).")

    async def _oauth_step(self, account_id: str, flow_id: str, step: LoginStep) -> None:
        """The browser came back from an OAuth page: the next step (consent) is asked in the
        management room of whoever started the link."""
        for mxid in await self.storage.accounts.matrix_users(account_id):
            room = await self.storage.management_rooms.get(UserID(mxid))
            if room is not None:
                await self._show_step(mxid, account_id, room, flow_id, step)
                return

    async def _show_step(self, sender: str, account_id: str, room_id: RoomID, flow_id: str,
                         step: LoginStep) -> None:
        field = step.fields[0] if step.fields else None
        text = step.message
        if step.url:
            text += f"\nOpen: {step.url}"
        await self._show_qr(sender, room_id, step.qr)
        if field:
            await self.prompts.ask(sender, account_id, flow_id, field.name, field.secret,
                                   PROMPT_SECONDS, qr_shown=self._qr_shown.get(sender))
            if field.secret:
                text += (f"\nSend it as your next message here within {PROMPT_SECONDS // 60}"
                         " minutes. I redact it as soon as I have read it, and never log it.")
        await self.bot.reply(room_id, None, text)

    async def _show_qr(self, sender: str, room_id: RoomID, qr: str | None) -> None:
        """A step's QR code as an image (its link in the body, for clients without images);
        the one it replaces, or that a later step no longer needs, is redacted."""
        shown = self._qr_shown.get(sender)
        if shown is not None and qr is not None and shown[2] == _qr_hash(qr):
            return  # the same code, asked again ("not scanned yet")
        if shown is not None:
            del self._qr_shown[sender]
            try:
                await self.bot.intent.redact(RoomID(shown[0]), EventID(shown[1]),
                                             reason="This QR code was replaced or used")
            except MatrixError as e:
                log.warning("Could not remove a login QR code in %s: %s", shown[0], e.message)
        if qr is None:
            return
        png, size = qr_png(qr)
        image = await qr_image(self.bot.intent, png, size, "login-qr.png",
                               body=f"QR code: {qr}")
        event_id = await self.bot.intent.send_message(room_id, image)
        self._qr_shown[sender] = (room_id, event_id, _qr_hash(qr))

    async def answer_prompt(self, room_id: RoomID, event_id: EventID, sender: UserID,
                            text: str) -> bool:
        prompt = await self.prompts.take(sender)  # taken here: no other worker reads it too
        if prompt is None:
            return False
        if prompt.qr_shown is not None:  # perhaps shown by another worker
            self._qr_shown[sender] = prompt.qr_shown
        redacted = await self._redact(room_id, event_id) if prompt.secret else True
        if prompt.expired:
            await self.bot.reply(room_id, None, 'That took too long; start again with "link".')
            return True
        account = await self.accounts.for_matrix_user(sender)
        try:
            result = await self.linking.submit(account.id, prompt.flow_id,
                                               {prompt.field: text}, actor=sender)
        except LinkRefused as e:
            await self._show_qr(sender, room_id, None)  # the flow is over
            await self.bot.reply(room_id, None, f'{e} Send "link" again to retry.')
            return True
        if not redacted:
            await self.bot.reply(room_id, None, "I could not redact your message (I need "
                                 "permission to remove messages here): delete it yourself.")
        if isinstance(result, LinkDone):
            await self._show_qr(sender, room_id, None)
            persona = result.persona
            checks = "\n".join(f"  - {c}" for c in result.verified)
            await self.bot.reply(room_id, None,
                                 f"Linked {persona.platform}:{persona.external_user_id}. "
                                 f"Verified:\n{checks}")
        else:
            next_id, step = result
            await self._show_step(sender, account.id, room_id, next_id, step)
        return True

    async def _redact(self, room_id: RoomID, event_id: EventID) -> bool:
        try:
            await self.bot.intent.redact(room_id, event_id, reason="Contained a password")
            return True
        except MatrixError as e:
            log.warning("Could not redact a secret in %s: %s", room_id, e.message)
            return False

    def _state_command(self, action: str):
        async def run(ctx: CommandContext) -> None:
            if len(ctx.args) != 1:
                raise CommandError(f'Usage: {action} PLATFORM:ID (see "personas")')
            account = await self.accounts.for_matrix_user(ctx.sender)
            try:
                persona = await self.accounts.set_persona_state(account.id, ctx.args[0],
                                                                action, actor=ctx.sender)
            except IdentityError as e:
                raise CommandError(str(e)) from e
            await ctx.reply(words.persona_now(persona.platform, persona.external_user_id,
                                              persona.status.value))

        return run

    async def confirm_first(self, ctx: CommandContext) -> None:
        positional, options = _options(ctx.args, set(), {"--profile"})
        if positional not in (["on"], ["off"]):
            raise CommandError("Usage: confirm-first on|off [--profile NAME]")
        account = await self.accounts.for_matrix_user(ctx.sender)
        name = str(options.get("profile") or await self._default_profile(account.id))
        profile = await self.storage.profiles.by_name(account.id, name)
        if profile is None:
            raise CommandError(f'You have no profile called "{name}".')
        await self.storage.first_sends.set_setting(profile.id, positional == ["on"])
        await ctx.reply(f"First messages into each remote room from {profile.name} "
                        + ("wait for your confirmation." if positional == ["on"]
                           else "go straight through."))

    async def _held(self, ctx: CommandContext) -> HeldSend:
        held = await self.storage.first_sends.oldest(ctx.sender)
        if held is None:
            raise CommandError("You have no held message.")
        return held

    async def confirm(self, ctx: CommandContext) -> None:
        held = await self._held(ctx)
        await self.storage.first_sends.mark_sent(held.persona_id, held.channel)
        await self.storage.first_sends.release(held.event_id)
        account = await self.accounts.for_matrix_user(ctx.sender)
        await self.audit.append(AuditEvent.CONFIRM, actor=ctx.sender, account=account.id,
                                persona=held.persona_id,
                                details={"channel": held.channel, "decision": "send"})
        portal = await self.portals.get_by_mxid(RoomID(held.room_id))
        # An agent's act is the event the bridge made for it (its Matrix copy is the bot's).
        made = await self.storage.agents.confirmed_event(held.event_id)
        evt = (Event.deserialize(made) if made is not None else
               await self.bot.intent.get_event(RoomID(held.room_id), EventID(held.event_id)))
        if portal is None or not isinstance(evt, MessageEvent):
            raise CommandError("That message or its room is gone.")
        await self.delivery.enqueue(portal, evt)
        await ctx.reply(f"Sending your first message into {held.channel}.")

    async def cancel(self, ctx: CommandContext) -> None:
        held = await self._held(ctx)
        await self.storage.first_sends.release(held.event_id)
        account = await self.accounts.for_matrix_user(ctx.sender)
        await self.audit.append(AuditEvent.CONFIRM, actor=ctx.sender, account=account.id,
                                persona=held.persona_id,
                                details={"channel": held.channel, "decision": "drop"})
        await ctx.reply(f"Dropped the held message for {held.channel}.")

    async def personas(self, ctx: CommandContext) -> None:
        account = await self.accounts.for_matrix_user(ctx.sender)
        view = await self.accounts.view(account.id)
        lines = [f"{p.profile.name}: {x.platform}:{x.external_user_id} ({x.status.value}"
                 + (f", credentials checked {x.last_refresh}" if x.last_refresh else "")
                 + (f", picture {x.avatar_hash}" if x.avatar_hash else "") + ")"
                 for p in view.profiles for x in p.personas]
        await ctx.reply("\n".join(lines) if lines else
                        'No linked accounts yet. Link one with "link NETWORK ADDRESS".')

    async def map(self, ctx: CommandContext) -> None:
        positional, options = _options(ctx.args, {"--inbound-only", "--relay"},
                                       {"--profile", "--room"})
        if len(positional) != 2:
            raise CommandError("Usage: map NETWORK ROOM [--profile NAME] [--room !ID] "
                               "[--inbound-only] [--relay]")
        account = await self.accounts.for_matrix_user(ctx.sender)
        profile = str(options.get("profile") or await self._default_profile(account.id))
        try:
            rule = await self.rules.add(
                account.id, ctx.sender, profile, positional[0].lower(), positional[1],
                target_room=str(options["room"]) if "room" in options else None,
                inbound_only=bool(options.get("inbound-only")),
                relay=bool(options.get("relay")))
        except RuleRefused as e:
            raise CommandError(str(e)) from e
        portal = None if "*" in rule.remote else await self.storage.portals.get(
            rule.network, rule.remote)
        await ctx.reply(words.rule_mapped(rule.network, rule.remote, profile,
                                          portal.mxid if portal else "its room", rule.id))

    async def list_rules(self, ctx: CommandContext) -> None:
        account = await self.accounts.for_matrix_user(ctx.sender)
        rules = await self.storage.rules.for_account(account.id)
        names = {p.id: p.name for p in await self.storage.profiles.for_account(account.id)}
        lines = [f"{r.id}: {r.network} {r.remote} -> {names.get(r.profile_id, '?')}"
                 + (" (inbound only)" if r.inbound_only else "")
                 + (" (relay)" if r.relay else "") for r in rules]
        await ctx.reply("\n".join(lines) if lines else "No mapping rules yet.")

    async def unmap(self, ctx: CommandContext) -> None:
        if len(ctx.args) != 1:
            raise CommandError("Usage: unmap RULE (see \"rules\")")
        account = await self.accounts.for_matrix_user(ctx.sender)
        try:
            rule = await self.rules.remove(account.id, ctx.args[0], ctx.sender)
        except RuleRefused as e:
            raise CommandError(str(e)) from e
        await ctx.reply(words.rule_removed(rule.network, rule.remote))


def _qr_hash(qr: str) -> str:
    """Names a shown QR code without keeping the login token it encodes."""
    return hashlib.sha256(qr.encode()).hexdigest()


def _network_off(network: str, level: Level, running: list[str]) -> str:
    """Why `link NETWORK` cannot work here, and who can change that."""
    running_text = ", ".join(running) or "none"
    known = known_networks()
    if network not in known:
        return (f'"{network}" is not a network RelayForge knows (networks it knows: '
                f'{", ".join(known)}; running here: {running_text}).')
    if level >= Level.ADMIN:
        return (f"{network} is not enabled on this bridge (running: {running_text}). Set "
                f"networks.{network}.enabled: true and its settings in the bridge's config "
                "(see config.example.yaml), then restart the bridge.")
    return (f"{network} is not enabled on this bridge (running: {running_text}). Ask the "
            "bridge's admin to turn it on.")
