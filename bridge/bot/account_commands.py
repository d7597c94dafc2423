"""Account commands: account, profile, unlink, merge, login-link; and admin tools."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from .. import words
from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..identity.accounts import Accounts, AccountView
from ..identity.errors import IdentityError
from ..identity.merge import Merges
from ..security.ratelimit import RateLimiter, RateLimitSettings, wait_words
from .commands import Command, CommandContext, CommandError, CommandRegistry
from .permissions import Level

MERGE_CODE_MINUTES = 10
LOGIN_LINK_MINUTES = 5
SECTION = "Account"
T = TypeVar("T")
ADMIN = "Admin"


def describe(view: AccountView, provider_names: Mapping[str, str] | None = None) -> str:
    """The account as the bot says it; sign-in providers by the names the pages show."""
    names = provider_names or {}
    account = view.account
    lines = [f"Account {account.id} ({account.status.value}), credits: {account.credits}",
             "Matrix users: " + (", ".join(view.matrix_users) or "none")]
    if view.identities:
        lines.append(f"{words.SIGN_IN_METHODS}:")
        for identity in view.identities:
            email = identity.email or "no email"
            verified = "verified" if identity.email_verified else "unverified"
            name = names.get(identity.provider_id, identity.provider_id)
            lines.append(f"  {name}: {email} ({verified})")
    else:
        lines.append(f"{words.SIGN_IN_METHODS}: {words.MATRIX_SIGN_IN}")
    lines.append("Profiles:")
    for profile_view in view.profiles:
        profile = profile_view.profile
        space = f" - space {profile.space_mxid}" if profile.space_mxid else ""
        lines.append(f"  {profile.name}{space}")
        if not profile_view.personas:
            lines.append("    no linked accounts")
        for persona in profile_view.personas:
            name = persona.display_name or persona.external_user_id
            checked = (f", credentials checked {persona.last_refresh}"
                       if persona.last_refresh else "")
            picture = f", picture {persona.avatar_hash}" if persona.avatar_hash else ""
            lines.append(f"    {persona.platform}:{persona.external_user_id} ({name}) - "
                         f"{words.status_words(persona.status.value)}{checked}{picture}")
    return "\n".join(lines)


def _code() -> str:
    # Easy to type from one Matrix client into another; 40 bits, single use, 10 minutes.
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    raw = "".join(secrets.choice(alphabet) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


UndoFn = Callable[[str, str], Awaitable[str | None]]


def register_account_commands(registry: CommandRegistry, storage: Storage, accounts: Accounts,
                              merges: Merges, audit: AuditLog, web_url: str,
                              undo_provider_added: UndoFn,
                              merge_limiter: RateLimiter | None = None,
                              provider_names: Mapping[str, str] | None = None) -> None:
    # Wrong merge codes per account: without a limit, 40 bits are guessable by brute force.
    wrong_codes = (merge_limiter if merge_limiter is not None
                   else RateLimiter(RateLimitSettings().merge_confirm))

    async def account(ctx: CommandContext) -> None:
        mine = await accounts.for_matrix_user(ctx.sender)
        await ctx.reply(describe(await accounts.view(mine.id), provider_names))

    async def profile(ctx: CommandContext) -> None:
        usage = "Usage: profile create NAME | profile rename OLD NEW | profile delete NAME"
        if not ctx.args:
            raise CommandError(usage)
        mine = await accounts.for_matrix_user(ctx.sender)
        verb, rest = ctx.args[0].lower(), ctx.args[1:]
        if verb == "create" and len(rest) == 1:
            created = await _refuse(accounts.create_profile(mine.id, rest[0], actor=ctx.sender))
            await ctx.reply(words.profile_created(created.name))
        elif verb == "rename" and len(rest) == 2:
            await _refuse(accounts.rename_profile(mine.id, rest[0], rest[1], actor=ctx.sender))
            await ctx.reply(words.profile_renamed(rest[0], rest[1]))
        elif verb == "delete" and len(rest) == 1:
            await _refuse(accounts.delete_profile(mine.id, rest[0], actor=ctx.sender))
            await ctx.reply(words.profile_deleted(rest[0]))
        else:
            raise CommandError(usage)

    async def unlink(ctx: CommandContext) -> None:
        if len(ctx.args) != 1:
            raise CommandError("Usage: unlink PLATFORM:ID (see \"account\")")
        mine = await accounts.for_matrix_user(ctx.sender)
        persona = await _refuse(accounts.unlink_persona(mine.id, ctx.args[0], actor=ctx.sender))
        await ctx.reply(words.unlinked(persona.platform, persona.external_user_id))

    async def login_link(ctx: CommandContext) -> None:
        mine = await accounts.for_matrix_user(ctx.sender)
        token = await storage.one_time.issue("login_link", LOGIN_LINK_MINUTES * 60,
                                             account_id=mine.id, mxid=ctx.sender)
        await ctx.reply(f"Open this link within {LOGIN_LINK_MINUTES} minutes to sign in on the "
                        f"web as {ctx.sender}. It works once; do not share it.\n"
                        f"{web_url}/auth/matrix?token={token}")

    async def merge(ctx: CommandContext) -> None:
        usage = "Usage: merge start | merge confirm CODE"
        if not ctx.in_management_room:
            raise CommandError("Merging works only in your management room (a DM with me).")
        mine = await accounts.for_matrix_user(ctx.sender)
        if ctx.args == ["start"]:
            code = _code()
            await storage.one_time.issue("merge_code", MERGE_CODE_MINUTES * 60,
                                         account_id=mine.id, mxid=ctx.sender, value=code)
            await ctx.reply(
                f"Merge code: {code}\nSend \"merge confirm {code}\" from the management room of "
                f"the other account within {MERGE_CODE_MINUTES} minutes. That account will be "
                "merged into this one.")
        elif len(ctx.args) == 2 and ctx.args[0] == "confirm":
            code = ctx.args[1].upper()
            unknown = "That merge code is unknown, expired or already used."
            # Checked before the code is even looked at: once the limit is reached, the right
            # code is refused too, so guessing on cannot find it.
            wait = wrong_codes.wait(mine.id)
            if wait:
                raise CommandError(f"Too many wrong merge codes: try again in "
                                   f"{wait_words(wait)}. Any code is refused until then.")
            # Look before using it up: a confirmation sent from the wrong room must not burn it.
            seen = await storage.one_time.peek("merge_code", code)
            if seen is not None and seen.account_id == mine.id:
                raise CommandError("Send the confirmation from the other account's management "
                                   "room, not from the one that started the merge.")
            record = await storage.one_time.consume("merge_code", code)
            if record is None or record.account_id is None:
                wrong_codes.take(mine.id)
                raise CommandError(unknown)
            result = await _refuse(merges.merge(record.account_id, mine.id, actor=ctx.sender))
            await ctx.reply(f"Merged this account into the one of {record.mxid}: "
                            f"{result.credits_merged} credits and "
                            f"{len(result.providers_added)} sign-in provider(s) moved.")
        else:
            raise CommandError(usage)

    async def undo(ctx: CommandContext) -> None:
        mine = await accounts.for_matrix_user(ctx.sender)
        removed = await undo_provider_added(mine.id, ctx.sender)
        if removed is None:
            raise CommandError("There is no automatically added sign-in method to undo.")
        await ctx.reply(f"Removed {removed} as a way to sign in to your account.")

    registry.add(Command("account", SECTION, "Show your profiles, linked accounts and sign-ins",
                         account))
    registry.add(Command("profile", SECTION, "Create, rename or delete a profile", profile,
                         usage="create|rename|delete NAME"))
    registry.add(Command("unlink", SECTION, words.PERSONA_ACTIONS["unlink"],
                         unlink, usage="PLATFORM:ID"))
    registry.add(Command("login-link", SECTION, "Get a one-time link to sign in on the web",
                         login_link))
    registry.add(Command("merge", SECTION, "Merge another account of yours into this one",
                         merge, usage="start | confirm CODE"))
    registry.add(Command("undo", SECTION, "Remove a sign-in method that was added "
                         "automatically", undo))
    _register_admin(registry, storage, accounts, merges, audit)


async def _refuse(action):
    """Turn an identity refusal into a message for the person."""
    try:
        return await action
    except IdentityError as e:
        raise CommandError(str(e)) from e


def _register_admin(registry: CommandRegistry, storage: Storage, accounts: Accounts,
                    merges: Merges, audit: AuditLog) -> None:
    async def admin(ctx: CommandContext) -> None:
        usage = ("Usage: admin find MXID|EMAIL|ACCOUNT | admin merge INTO FROM | "
                 "admin unmerge MERGE_ID | admin hold create|list|release ...")
        extra = ctx.bot.commands.admin_verbs.get(ctx.args[0]) if ctx.args else None
        if extra is not None:
            return await extra(ctx)
        if len(ctx.args) < 2:
            raise CommandError(usage)
        verb = ctx.args[0]
        if verb == "find" and len(ctx.args) == 2:
            found = await accounts.find(ctx.args[1])
            if len(found) != 1:
                raise CommandError(f"No single account matches {ctx.args[1]}.")
            account_id = found[0]
            view = await accounts.view(account_id)
            history = await storage.merges.involving(account_id)
            lines = [describe(view)]
            for record in history:
                state = "reversed" if record.reversed_at else "in effect"
                lines.append(f"Merge {record.id}: {record.from_account} -> "
                             f"{record.into_account} by {record.actor} ({state})")
            await audit.append(AuditEvent.ADMIN_ACTION, actor=ctx.sender, account=account_id,
                               details={"what": "viewed_account"})
            await ctx.reply("\n".join(lines))
        elif verb == "merge" and len(ctx.args) == 3:
            result = await _refuse(merges.merge(ctx.args[1], ctx.args[2], actor=ctx.sender))
            await ctx.reply(f"Merged {ctx.args[2]} into {ctx.args[1]} (merge "
                            f"{result.merge_id}).")
        elif verb == "unmerge" and len(ctx.args) == 2:
            await _refuse(merges.reverse(ctx.args[1], actor=ctx.sender))
            await ctx.reply(f"Reversed merge {ctx.args[1]}.")
        else:
            raise CommandError(usage)

    registry.add(Command("admin", ADMIN, "Support tools: find, merge and unmerge accounts",
                         admin, level=Level.ADMIN, usage="find|merge|unmerge ..."))
