"""`admin hold ...`: legal holds from the management room (bridge admins only).

  admin hold create NAME --room NETWORK ROOM | --workspace NETWORK ID | --user @u:server |
                         --account ID  [--from DATE] [--until DATE] [--reason TEXT]
  admin hold list
  admin hold release NAME
"""

from __future__ import annotations

from ..compliance.holds import HoldError, Holds, describe, parse_time
from .commands import CommandContext, CommandError, CommandRegistry

USAGE = ("Usage: admin hold create NAME (--room NETWORK ROOM | --workspace NETWORK ID | "
         "--user @user:server | --account ACCOUNT) [--from DATE] [--until DATE] "
         "[--reason TEXT] | admin hold list | admin hold release NAME")
_SCOPES = {"--room": ("room", 2), "--workspace": ("workspace", 2), "--user": ("user", 1),
           "--account": ("account", 1)}


def _create_args(args: list[str]) -> dict[str, str | None]:
    if not args or args[0].startswith("--"):
        raise CommandError(USAGE)
    found: dict[str, str | None] = {"name": args[0], "scope": None, "network": None,
                                    "target": None, "from": None, "until": None,
                                    "reason": None}
    rest = args[1:]
    while rest:
        flag = rest.pop(0)
        if flag in _SCOPES:
            scope, count = _SCOPES[flag]
            if found["scope"] is not None:
                raise CommandError("A hold has one scope: give one of --room, --workspace, "
                                   "--user or --account.")
            if len(rest) < count:
                wanted = "NETWORK and an id" if count == 2 else "a value"
                raise CommandError(f"{flag} needs {wanted}. {USAGE}")
            values = [rest.pop(0) for _ in range(count)]
            found["scope"] = scope
            if count == 2:
                found["network"] = values[0]
            found["target"] = values[-1]
        elif flag in ("--from", "--until", "--reason"):
            if not rest:
                raise CommandError(f"{flag} needs a value. {USAGE}")
            found[flag[2:]] = rest.pop(0)
        else:
            raise CommandError(f"{flag!r} is not an option here. {USAGE}")
    if found["scope"] is None:
        raise CommandError("Say what the hold covers: --room, --workspace, --user or "
                           "--account.")
    return found


def hold_command(holds: Holds):
    async def run(ctx: CommandContext) -> None:
        args = ctx.args[1:]  # after "hold"
        verb = args[0] if args else ""
        try:
            if verb == "create":
                given = _create_args(args[1:])
                hold = await holds.create(
                    name=given["name"] or "", scope=given["scope"] or "",
                    target=given["target"] or "", network=given["network"],
                    reason=given["reason"], actor=ctx.sender,
                    starts_at=parse_time(given["from"], "--from"),
                    ends_at=parse_time(given["until"], "--until", end=True))
                await ctx.reply(f"Hold in place: {describe(hold, 0)}. From now on the bridge "
                                "keeps every version, deletion, reaction and file of what it "
                                "covers.")
            elif verb == "list" and len(args) == 1:
                listed = await holds.listing(ctx.sender)
                await ctx.reply("\n".join(["Legal holds:", *(f"- {describe(h, n)}"
                                                             for h, n in listed)])
                                if listed else "No legal holds.")
            elif verb == "release" and len(args) == 2:
                hold = await holds.release(args[1], ctx.sender)
                await ctx.reply(f"Released: {describe(hold)}. What it kept stays until "
                                "retention removes it.")
            else:
                raise CommandError(USAGE)
        except HoldError as e:
            raise CommandError(str(e)) from e

    return run


def register_hold_commands(registry: CommandRegistry, holds: Holds) -> None:
    """`hold` becomes a verb of the admin command (which needs the admin level)."""
    registry.admin_verbs["hold"] = hold_command(holds)
