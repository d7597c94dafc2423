"""agents, agents revoke NAME: the person's AI agents (the MCP endpoint), listed and stopped
from the management room. A revoked agent's next call is refused (HTTP 401)."""

from __future__ import annotations

from datetime import UTC, datetime

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..identity.accounts import Accounts
from .commands import Command, CommandContext, CommandError, CommandRegistry

SECTION = "Account"


def _when(ms: int | None) -> str:
    if ms is None:
        return "never"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def register_agent_commands(registry: CommandRegistry, storage: Storage, accounts: Accounts,
                            audit: AuditLog, mcp_url: str | None) -> None:
    async def run(ctx: CommandContext) -> None:
        account = await accounts.for_matrix_user(ctx.sender)
        if ctx.args and ctx.args[0].lower() == "revoke":
            await revoke(ctx, account.id, " ".join(ctx.args[1:]).strip())
            return
        if ctx.args:
            raise CommandError("Usage: agents, or agents revoke NAME")
        grants = await storage.agents.grants(account.id)
        if not grants:
            where = (f"Point an MCP client at {mcp_url} to authorise one." if mcp_url else
                     "The bridge's MCP endpoint is off (mcp.enabled).")
            await ctx.reply(f"You have authorised no agents. {where}")
            return
        names = {p.id: p.name for p in await storage.profiles.for_account(account.id)}
        lines = ["Your agents:"]
        for grant in grants:
            profiles = ", ".join(names.get(p, p) for p in grant.profile_ids)
            lines.append(f"- {grant.name}: {', '.join(grant.actions)} on "
                         f"{', '.join(grant.networks)} as {profiles}; authorised "
                         f"{_when(grant.created_at)}, last used {_when(grant.last_used_at)}")
        lines.append("Stop one: agents revoke NAME")
        await ctx.reply("\n".join(lines))

    async def revoke(ctx: CommandContext, account_id: str, name: str) -> None:
        if not name:
            raise CommandError("Usage: agents revoke NAME (see \"agents\")")
        grants = [g for g in await storage.agents.grants(account_id)
                  if g.name.lower() == name.lower()]
        if not grants:
            raise CommandError(f'You have no agent called "{name}"; see "agents".')
        for grant in grants:
            await storage.agents.revoke_grant(grant.id)
            await audit.append(AuditEvent.AGENT, actor=ctx.sender, account=account_id,
                               details={"change": "revoked", "agent": grant.name,
                                        "agent_id": grant.id, "reason": "agents revoke"})
        await ctx.reply(f"Revoked {grants[0].name}: its tokens no longer work, and what it "
                        "asks next is refused.")

    registry.add(Command("agents", SECTION, "Your AI agents (MCP): list them, or revoke one",
                         run, usage="[revoke NAME]"))
