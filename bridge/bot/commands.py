"""Management-bot commands: a registry per bot instance, so each network can add its own."""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
from mautrix.types import EventID, RoomID, UserID

from .permissions import Level


class CommandHost(Protocol):
    """What a command sees of the bot that runs it (`bot.ManagementBot`)."""

    prefix: str
    commands: CommandRegistry

    async def reply(self, room_id: RoomID, event_id: EventID | None, text: str) -> None: ...


@attrs.define
class CommandContext:
    bot: CommandHost
    sender: UserID
    room_id: RoomID
    event_id: EventID
    level: Level
    args: list[str]
    in_management_room: bool

    async def reply(self, markdown: str) -> None:
        await self.bot.reply(self.room_id, self.event_id, markdown)


Handler = Callable[[CommandContext], Awaitable[None]]


@attrs.frozen
class Command:
    name: str
    section: str
    summary: str
    handler: Handler
    level: Level = Level.USER
    usage: str = ""
    aliases: tuple[str, ...] = ()


class CommandError(Exception):
    """A command was used wrongly; the message is shown to the person as it is."""


class CommandRegistry:
    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}
        self._names: dict[str, Command] = {}
        # Verbs other modules add to the `admin` command (e.g. "hold"), at its level.
        self.admin_verbs: dict[str, Handler] = {}

    def add(self, command: Command) -> None:
        for name in (command.name, *command.aliases):
            if name in self._names:
                raise ValueError(f"command {name!r} is already registered")
        self._commands[command.name] = command
        for name in (command.name, *command.aliases):
            self._names[name] = command

    def get(self, name: str) -> Command | None:
        return self._names.get(name.lower())

    def visible_to(self, level: Level) -> list[Command]:
        return [c for c in self._commands.values() if c.level <= level]


def split_command(text: str) -> list[str]:
    """Split like a shell so quoted arguments stay whole; unbalanced quotes fall back to spaces."""
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()
