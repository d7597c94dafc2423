"""`audit`: a person reads their own audit trail; admins can read anyone's."""

from __future__ import annotations

import json

from ..audit import AuditLog
from ..db.audit_log import AuditRow
from .commands import Command, CommandContext, CommandError, CommandRegistry
from .permissions import Level

DEFAULT_COUNT = 20
MAX_COUNT = 500


def format_record(row: AuditRow) -> str:
    details = json.loads(row.details)
    detail_text = ", ".join(f"{k}={v}" for k, v in sorted(details.items()) if v is not None)
    where = "/".join(p for p in (row.profile, row.persona) if p)
    parts = [f"#{row.seq}", row.ts[:19].replace("T", " "), row.event_type, f"by {row.actor}"]
    if where:
        parts.append(f"({where})")
    if detail_text:
        parts.append(f"- {detail_text}")
    return " ".join(parts)


def _parse(args: list[str], level: Level, sender: str) -> tuple[str | None, int]:
    who: str | None = sender
    count = DEFAULT_COUNT
    for arg in args:
        if arg.isdigit():
            count = int(arg)
        elif arg == "all" or arg.startswith("@"):
            if level < Level.ADMIN:
                raise CommandError("Only bridge admins can read other people's audit records.")
            who = None if arg == "all" else arg
        else:
            raise CommandError(f'"{arg}" is not a number of records, "all" or a user ID. '
                               "Usage: audit [count] (admins: audit all|@user [count])")
    if not 0 < count <= MAX_COUNT:
        raise CommandError(f"Ask for between 1 and {MAX_COUNT} records.")
    return who, count


def register_audit_commands(registry: CommandRegistry, audit: AuditLog) -> None:
    async def run(ctx: CommandContext) -> None:
        who, count = _parse(ctx.args, ctx.level, ctx.sender)
        rows = await audit.latest(count, who=who)
        if not rows:
            await ctx.reply("No audit records yet." if who is None
                            else f"No audit records for {who} yet.")
            return
        heading = f"Last {len(rows)} audit records" + (f" for {who}:" if who else ":")
        await ctx.reply("\n".join([heading, *(format_record(r) for r in rows)]))

    registry.add(Command("audit", "Account", "Show your latest audit records (audit 50 for more)",
                         run, usage="[count]"))
