"""The commands every bridge has: help, ping, version, whoami."""

from __future__ import annotations

import platform
from collections.abc import Callable
from importlib.metadata import version as package_version

from .. import __version__
from .commands import Command, CommandContext, CommandRegistry

GENERAL = "General"


async def _help(ctx: CommandContext) -> None:
    prefix = "" if ctx.in_management_room else f"{ctx.bot.prefix} "
    sections: dict[str, list[Command]] = {}
    for command in ctx.bot.commands.visible_to(ctx.level):
        sections.setdefault(command.section, []).append(command)
    lines = []
    for section, commands in sections.items():
        lines.append(f"{section}:")
        for command in sorted(commands, key=lambda c: c.name):
            usage = f" {command.usage}" if command.usage else ""
            lines.append(f"  {prefix}{command.name}{usage} - {command.summary}")
    await ctx.reply("\n".join(lines))


async def _version(ctx: CommandContext) -> None:
    await ctx.reply(
        f"RelayForge {__version__} (mautrix {package_version('mautrix')}, "
        f"Python {platform.python_version()})"
    )


async def _whoami(ctx: CommandContext) -> None:
    room = ("This room is your management room." if ctx.in_management_room
            else "Send me a direct message to get a management room.")
    await ctx.reply(
        f"You are {ctx.sender}. Your permission level is {ctx.level.name.lower()}.\n{room}"
    )


def network_status_command(status: Callable[[], dict[str, str]]) -> Command:
    async def run(ctx: CommandContext) -> None:
        networks = status()
        if networks:
            detail = ", ".join(f"{name}: {state}" for name, state in sorted(networks.items()))
        else:
            detail = "no networks are enabled yet"
        await ctx.reply(f"Pong! The bridge is running. Networks: {detail}.")

    return Command("ping", GENERAL, "Check that the bridge answers and see each network's state",
                   run)


def register_builtin_commands(registry: CommandRegistry,
                              network_status: Callable[[], dict[str, str]]) -> None:
    registry.add(Command("help", GENERAL, "List the commands you can use", _help))
    registry.add(network_status_command(network_status))
    registry.add(Command("version", GENERAL, "Show the bridge's version", _version))
    registry.add(Command("whoami", GENERAL, "Show who you are to the bridge and your level",
                         _whoami))
