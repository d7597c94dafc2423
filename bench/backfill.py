"""Backfill throughput: history messages per second into Matrix through the bridge's one
backfill path (core/backfill.py: gate, pacing, router, progress records), as a ratio to an
appservice ghost sending the same number of messages itself, one after another, in the same
run on the same Synapse.

    .venv/bin/python -m bench.backfill [--n 300]

The network side costs nothing (the history is made up front), so the figure is what the
bridge adds on the way into Matrix. Pacing is set out of the way (`rate` far above what
Synapse takes): the configured rate is a limit, not what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from mautrix.types import UserID

from bridge.core.backfill import Backfill, BackfillSettings
from bridge.networks.base import RemoteMessage, RemoteRoom, RemoteUser
from bridge.networks.history import HistoryCursor, HistoryPage

from . import measure
from .endpoints import NETWORK
from .harness import Harness

METHOD = ("n history messages of one new portal sent by the bridge's backfill (one room, "
          "oldest first, original timestamps), timed from the start until a person's /sync "
          "showed all; baseline: an appservice ghost of the bridge's registration PUTs n "
          "messages into one room itself, one after another; ratio = backfill/baseline "
          "(higher is better)")


class MadeUpHistory:
    """A network whose history is already in memory: `fetch_history` costs nothing."""

    def __init__(self, events: list[RemoteMessage]) -> None:
        self.events = events

    async def fetch_history(self, persona_id: str, room: RemoteRoom, *,
                            after: HistoryCursor | None, not_before_ms: int | None,
                            limit: int) -> HistoryPage:
        last = self.events[-1]
        return HistoryPage(tuple(self.events[-limit:]),
                           HistoryCursor(last.timestamp_ms or 0, last.message_id))


async def backfill_figure(h: Harness, n: int) -> dict[str, Any]:
    assert h.bridge is not None and h.bridge.router is not None and h.person is not None
    assert h.bridge.storage is not None and h.bridge.security is not None
    assert h.watcher is not None
    lanes = await measure.prepare(h, 1)
    # A cold homeserver would make whichever side runs first look slow.
    await measure.warm_up(h, lanes, max(20, n // 5), 1)
    baseline = await measure.throughput(h, measure.baseline_sender(lanes), n, 1)

    run = secrets.token_hex(3)
    person = UserID(h.person.user_id or "")
    room = RemoteRoom(f"history-{run}", name=f"bench history {run}")
    sender = RemoteUser(f"historian-{run}", display_name="Historian")
    now = int(time.time() * 1000) - n * 1000
    tags = [measure.tag(run, 0, i) for i in range(n)]
    history = [RemoteMessage(room=room, sender=sender, receiver=person, message_id=tag,
                             text=tag, timestamp_ms=now + i * 1000)
               for i, tag in enumerate(tags)]
    router = h.bridge.router
    backfill = Backfill(h.bridge.storage, {NETWORK: MadeUpHistory(history)},  # type: ignore[dict-item]
                        router.gate, router.handle_remote_event, h.bridge.security.audit,
                        BackfillSettings(initial_messages=n, rate=1e6, burst=n))
    # The portal exists (and the person is in it) before the clock runs, as in the baseline.
    portal = await h.bridge.router.portals.ensure(NETWORK, room, person)
    assert portal.mxid
    await h.person.join(portal.mxid)
    started = time.perf_counter()
    await backfill.portal_ready(NETWORK, room, "")
    await backfill.wait()
    sent = time.perf_counter()
    seen = await h.watcher.visible.wait(tags, measure.DEADLINE)
    visible = max(max(seen.values()), sent)
    rate = round(n / (visible - started), 1)
    return {"method": METHOD, "messages": n,
            "baseline_msgs_per_s": baseline["msgs_per_s"], "backfill_msgs_per_s": rate,
            "ratio": round(rate / baseline["msgs_per_s"], 3)}


async def main_async(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="relayforge-bench-") as directory:
        h = Harness(Path(directory), None)
        try:
            await h.start()
            return await backfill_figure(h, n)
        finally:
            await h.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.backfill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="history messages (default 300)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(json.dumps(asyncio.run(main_async(args.n)), indent=2))


if __name__ == "__main__":
    main()
