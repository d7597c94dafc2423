"""The bridge in a process of its own (tests/support/bridge_process.py), so a test can kill -9
it and start it again on the same database, and the usual start for the Slack tests among
them: such a bridge with the Slack fake, alice linked and #general mapped."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.fakes.slack import FakeSlack
from tests.fakes.slack.scenario import World

from .matrix import DEADLINE, MatrixUser
from .slack import link_slack, slack_settings

ROOT = Path(__file__).resolve().parent.parent.parent


class BridgeProcess:
    def __init__(self, config: Path, wire_url: str | None, ready_url: str, log: Path) -> None:
        self.command = [sys.executable, "-m", "tests.support.bridge_process", str(config),
                        *([wire_url] if wire_url else [])]
        self.ready_url = ready_url
        self.log = log
        self.process: subprocess.Popen | None = None

    @classmethod
    def of(cls, homeserver: Any, config: Any, tmp_path: Path,
           wire_url: str | None = None) -> BridgeProcess:
        """The bridge of `config` (the test homeserver's bridge config), ready once the test
        homeserver's appservice port answers, logging to bridge.log in `tmp_path`."""
        return cls(Path(config.path), wire_url,
                   f"{homeserver.appservice_url}/_matrix/mau/ready", tmp_path / "bridge.log")

    def _spawn(self) -> subprocess.Popen:
        with self.log.open("a") as log:
            return subprocess.Popen(self.command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    async def start(self) -> None:
        self.process = self._spawn()
        async with aiohttp.ClientSession() as session, asyncio.timeout(DEADLINE):
            while True:
                assert self.process.poll() is None, f"the bridge died; see {self.log}"
                try:
                    async with session.get(self.ready_url) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)

    def kill(self) -> None:
        """kill -9: no shutdown, nothing flushed."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class SlackGeneral:
    """A bridge process with alice linked to Slack and #general mapped to `portal`."""

    bridge: BridgeProcess
    alice: MatrixUser
    portal: str


@asynccontextmanager
async def slack_general_process(homeserver: Any, db_uri: str, tmp_path: Path, new_user: Any,
                                slack: FakeSlack, world: World, *,
                                slack_extra: dict[str, Any] | None = None,
                                extra: dict[str, Any] | None = None
                                ) -> AsyncIterator[SlackGeneral]:
    """A bridge process with Slack on (its settings and `slack_extra`, the config's `extra`);
    alice (a new Matrix user) links her Slack account and maps #general, and is invited to
    its portal. The bridge is stopped on the way out (unless the test killed it)."""
    callback = f"{homeserver.appservice_url}/link/slack/callback"
    config = homeserver.bridge_config(tmp_path, db_uri, extra={
        "networks": {"slack": {**slack_settings(slack, callback), **(slack_extra or {})}},
        **(extra or {})})
    bridge = BridgeProcess.of(homeserver, config, tmp_path)
    await bridge.start()
    try:
        alice = await new_user("alice")
        room = await link_slack(alice, homeserver.bot_mxid, slack, world.alice)
        await alice.send_text(room, f"map slack {world.team.id}/#general --profile Jobb")
        yield SlackGeneral(bridge, alice, await alice.wait_for_invite())
    finally:
        bridge.stop()
