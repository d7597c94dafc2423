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


async def talk_to_bot(output: str) -> None:
    homeserver = re.search(r"Homeserver: (\S+)", output).group(1)
    user = re.search(r"User:\s+(\S+)", output).group(1)
    password = re.search(r"Password:\s+(\S+)", output).group(1)
    bot = re.search(r"Bot:\s+(\S+)", output).group(1)
    client = ClientAPI(base_url=homeserver)
    await client.login(identifier=UserID(user), login_type=LoginType.PASSWORD, password=password)
    person = MatrixUser(client)
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
