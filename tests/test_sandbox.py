"""The README's first command: scripts/sandbox brings up Synapse + the bridge to talk to."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

from mautrix.client import ClientAPI
from mautrix.types import LoginType, UserID

from bridge.sandbox.synapse import free_port

from .support.matrix import DEADLINE, MatrixUser

ROOT = Path(__file__).resolve().parent.parent


async def start_sandbox(directory: Path, hs_port: int, as_port: int
                        ) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "sandbox"), "--dir", str(directory),
        "--hs-port", str(hs_port), "--as-port", str(as_port),
        "--xmpp-port", str(free_port()), "--dns-port", str(free_port()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output = ""
    async with asyncio.timeout(DEADLINE * 4):  # first run installs into .venv if needed
        while "Press Ctrl-C" not in output:
            line = await process.stdout.readline()
            if not line:
                raise AssertionError(f"sandbox exited early:\n{output}")
            output += line.decode()
    return process, output


async def stop_sandbox(process: asyncio.subprocess.Process) -> str:
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(DEADLINE):
        rest, _ = await process.communicate()
    assert process.returncode == 0, rest.decode()
    return rest.decode()


async def log_in(output: str) -> MatrixUser:
    """The demo user from the banner, logged in as a newcomer would."""
    homeserver = re.search(r"Homeserver: (\S+)", output).group(1)
    user = re.search(r"User:\s+(\S+)", output).group(1)
    password = re.search(r"Password:\s+(\S+)", output).group(1)
    client = ClientAPI(base_url=homeserver)
    await client.login(identifier=UserID(user), login_type=LoginType.PASSWORD, password=password)
    return MatrixUser(client)


async def talk_to_bot(output: str) -> None:
    bot = re.search(r"Bot:\s+(\S+)", output).group(1)
    person = await log_in(output)
    try:
        room = await person.open_dm(UserID(bot))
        await person.wait_for_notice(room, UserID(bot), "management room")
        await person.send_text(room, "help")
        await person.wait_for_notice(room, UserID(bot), "General:")
    finally:
        await person.close()


async def test_sandbox_runs_and_a_second_run_reuses_it(tmp_path):
    directory = tmp_path / "sandbox"
    hs_port, as_port = free_port(), free_port()
    process, output = await start_sandbox(directory, hs_port, as_port)
    try:
        await talk_to_bot(output)
    finally:
        await stop_sandbox(process)
    config_before = (directory / "config.yaml").read_text()

    # Second run: same homeserver, same demo user and tokens; the bot still answers.
    process, again = await start_sandbox(directory, hs_port, as_port)
    try:
        password = re.search(r"Password:\s+(\S+)", output).group(1)
        assert re.search(r"Password:\s+(\S+)", again).group(1) == password
        await talk_to_bot(again)
    finally:
        await stop_sandbox(process)
    assert (directory / "config.yaml").read_text() == config_before


async def test_sandbox_bridges_the_demo_xmpp_chat_both_ways(tmp_path):
    # Exactly what the banner tells a newcomer to do, and nothing else.
    process, output = await start_sandbox(tmp_path / "sandbox", free_port(), free_port())
    try:
        steps = re.findall(r"^\s+\d\. (?:send|reply):?\s+(.+?)\s*$", output, re.MULTILINE)
        link, _, consent, mapping = steps
        password = re.search(r"send the password (\S+)", output).group(1)
        assert link.startswith("link xmpp ") and mapping.startswith("map xmpp ")
        bot = UserID(re.search(r"Bot:\s+(\S+)", output).group(1))
        person = await log_in(output)
        try:
            room = await person.open_dm(bot)
            await person.wait_for_notice(room, bot, "management room")
            await person.send_text(room, link)
            await person.wait_for_notice(room, bot, "Send it as your next message")
            await person.send_text(room, password)
            await person.wait_for_notice(room, bot, "Reply yes to link")
            await person.send_text(room, consent)
            await person.wait_for_notice(room, bot, "Linked xmpp:")
            await person.send_text(room, mapping)
            portal = await person.wait_for_invite()
            await person.send_text(portal, "hello from Matrix")
            # The demo contact heard it on XMPP, and its answer came back into Matrix.
            answer = await person.wait_for_event(
                portal, lambda e: "friend heard" in str(getattr(e.content, "body", ""))
                and "hello from Matrix" in e.content.body, "the demo contact's answer")
            assert answer.sender != person.mxid
        finally:
            await person.close()
    finally:
        rest = await stop_sandbox(process)
    assert "Traceback" not in rest
