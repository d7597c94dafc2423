"""The README's command table lists exactly the bot's commands."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.bot.commands import Level

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_commands() -> set[str]:
    text = README.read_text()
    table = text[text.index("## Talking to the bot"):]
    names: set[str] = set()
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split(" | ")[0]
        for span in re.findall(r"`([^`]+)`", first_cell):
            names.update(span.split()[0].split("\\|"))
    return names


async def test_readme_lists_every_command_and_no_other(start_bridge):
    bridge = await start_bridge()
    # Everything an admin sees is everything there is.
    registered = {command.name for command in bridge.bot.commands.visible_to(max(Level))}
    assert readme_commands() == registered
