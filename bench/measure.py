"""The measurements. Each bridge figure has a baseline measured in the same run, on the same
homeserver, with the same room layout, by the same person.

Remote -> Matrix (throughput): `lanes` rooms, one sender each, messages sent one after another
per lane, lanes in parallel. Baseline: an appservice ghost PUTs each message itself. Bridge: the
connector hands each `RemoteMessage` to the bridge's sink. The clock stops when the person's
/sync has shown every message.

Matrix -> remote (latency): the person sends into a room; the clock stops when the bare probe
appservice receives the transaction (baseline) or when the bridge calls the connector's
`send_message` (bridge). The probe is registered with the bridge's own registration settings
(harness.write_probe_registration) and its room is laid out as a portal (`make_probe_room`),
so what differs is what each appservice does with the transaction. Samples alternate between
the two, so drift affects both alike.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from mautrix.types import RoomID, UserID

from bridge.networks.base import RemoteMessage, RemoteRoom, RemoteUser

from .harness import PROBE_LOCALPART, SERVER_NAME, Harness
from .matrix import RawClient

# Not a speed target: how long to wait before calling a run failed.
DEADLINE = 300.0

Send = Callable[[int, str], Awaitable[None]]


def tag(run: str, lane: int, index: int) -> str:
    """A message body no other message has: it is how each message is recognised."""
    return f"rfbench {run} {lane} {index}"


def split(n: int, lanes: int) -> list[int]:
    return [n // lanes + (1 if lane < n % lanes else 0) for lane in range(lanes)]


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile: always one of the measured values."""
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"median": round(statistics.median(ms), 2), "p95": round(percentile(ms, 95), 2),
            "max": round(max(ms), 2), "samples": len(ms)}


@dataclass
class Lanes:
    """Where each lane sends: the baseline's rooms and ghosts, the bridge's remote rooms and
    remote senders (whose portals and ghosts already exist after `prepare`)."""

    baseline_rooms: list[str]
    baseline_ghosts: list[RawClient]
    remote_rooms: list[RemoteRoom]
    remote_senders: list[RemoteUser]
    portals: list[str]


async def prepare(h: Harness, lanes: int) -> Lanes:
    """Make every room, ghost and membership before any clock runs: creating a portal is a
    one-time cost, not part of relaying."""
    assert h.bridge is not None and h.bridge.appservice is not None and h.person is not None
    bot = h.bridge.appservice.intent
    person = UserID(h.person.user_id or "")
    run = secrets.token_hex(3)
    baseline_rooms, ghosts = [], []
    for lane in range(lanes):
        # The same layout as a portal: the bridge bot creates the room and invites the person;
        # the ghost joins through the bot.
        room = await bot.create_room(name=f"bench baseline {lane}", invitees=[person])
        await h.person.join(room)
        ghost = h.ghost_client(f"base-{run}-{lane}")
        await bot.user(UserID(ghost.masquerade or "")).ensure_joined(RoomID(room))
        baseline_rooms.append(room)
        ghosts.append(ghost)
    remote_rooms = [RemoteRoom(f"room-{run}-{lane}", name=f"bench portal {lane}")
                    for lane in range(lanes)]
    senders = [RemoteUser(f"sender-{run}-{lane}", display_name=f"Sender {lane}")
               for lane in range(lanes)]
    portals = []
    for lane in range(lanes):
        await h.connector.emit(RemoteMessage(
            room=remote_rooms[lane], sender=senders[lane], receiver=person,
            message_id=f"create-{lane}", text=f"portal {run} {lane}"))
        portal = await h.bridge.storage.portals.get(h.connector.network,  # type: ignore[union-attr]
                                                    remote_rooms[lane].remote_id)
        assert portal is not None and portal.mxid
        await h.person.join(portal.mxid)
        portals.append(portal.mxid)
    return Lanes(baseline_rooms, ghosts, remote_rooms, senders, portals)


def baseline_sender(lanes: Lanes) -> Send:
    async def send(lane: int, body: str) -> None:
        await lanes.baseline_ghosts[lane].send_text(lanes.baseline_rooms[lane], body)
    return send


def bridge_sender(h: Harness, lanes: Lanes) -> Send:
    person = h.person.user_id if h.person else None

    async def send(lane: int, body: str) -> None:
        # As a real connector reports a message: with the person who saw it as receiver.
        await h.connector.emit(RemoteMessage(
            room=lanes.remote_rooms[lane], sender=lanes.remote_senders[lane],
            receiver=person, message_id=body, text=body))
    return send


async def throughput(h: Harness, send: Send, n: int, lanes: int) -> dict[str, float]:
    """`n` messages over `lanes` parallel lanes; messages/second until all were visible."""
    assert h.watcher is not None
    run = secrets.token_hex(3)
    counts = split(n, lanes)
    tags = [tag(run, lane, i) for lane in range(lanes) for i in range(counts[lane])]

    async def lane_task(lane: int) -> None:
        for i in range(counts[lane]):
            await send(lane, tag(run, lane, i))

    started = time.perf_counter()
    await asyncio.gather(*(lane_task(lane) for lane in range(lanes)))
    sent = time.perf_counter()
    seen = await h.watcher.visible.wait(tags, DEADLINE)
    visible = max(max(seen.values()), sent)
    return {"msgs_per_s": round(n / (visible - started), 1),
            "sent_s": round(sent - started, 3), "visible_s": round(visible - started, 3)}


async def remote_to_matrix(h: Harness, lanes: Lanes, n: int, lanes_count: int,
                           repeats: int) -> dict[str, object]:
    """Baseline and bridge in alternating order (AB, BA, ...), so neither always runs on the
    warmer or the fuller homeserver; each figure is all messages over all their time."""
    base, bridge = baseline_sender(lanes), bridge_sender(h, lanes)
    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "bridge": []}
    for repeat in range(repeats):
        order = [("baseline", base), ("bridge", bridge)]
        for name, send in order if repeat % 2 == 0 else reversed(order):
            runs[name].append(await throughput(h, send, n, lanes_count))

    def rate(name: str) -> float:
        return round(n * repeats / sum(r["visible_s"] for r in runs[name]), 1)

    result = {"lanes": lanes_count, "messages": n, "repeats": repeats,
              "baseline_msgs_per_s": rate("baseline"), "bridge_msgs_per_s": rate("bridge")}
    result["ratio"] = round(result["bridge_msgs_per_s"] / result["baseline_msgs_per_s"], 3)
    result["runs"] = runs
    return result


async def warm_up(h: Harness, lanes: Lanes, n: int, lanes_count: int) -> None:
    """Fill caches on every side (Synapse's, the bridge's state store and statements, the
    connection pools) before anything is timed."""
    await throughput(h, baseline_sender(lanes), n, lanes_count)
    await throughput(h, bridge_sender(h, lanes), n, lanes_count)


# ---- Matrix -> remote -------------------------------------------------------------------------

async def make_probe_room(h: Harness) -> str:
    """A room the bare probe appservice is interested in, laid out as a portal is: made by
    the appservice's own user, with the person invited and joined and one of the
    appservice's "ghosts" joined (the homeserver's work per message grows with the room's
    local members)."""
    assert h.person is not None
    probe = h.client(h.probe_as_token, h.probe_mxid)
    room = await probe.create_room("bench probe", [h.person.user_id or ""])
    await h.person.join(room)
    ghost_mxid = f"@{PROBE_LOCALPART}_sender:{SERVER_NAME}"
    await probe.request("POST", "/_matrix/client/v3/register",
                        {"type": "m.login.application_service",
                         "username": f"{PROBE_LOCALPART}_sender", "inhibit_login": True})
    await probe.request("POST", f"/_matrix/client/v3/rooms/{quote(room)}/invite",
                        {"user_id": ghost_mxid})
    await h.client(h.probe_as_token, ghost_mxid).join(room)
    return room


async def one_trip(h: Harness, room: str, body: str) -> float:
    assert h.person is not None
    started = time.perf_counter()
    await h.person.send_text(room, body)
    arrived = await h.delivered.wait([body], DEADLINE)
    return arrived[body] - started


async def matrix_to_remote(h: Harness, portal: str, probe_room: str, n: int,
                           warm: int) -> dict[str, object]:
    """Sequential round trips: each message is delivered before the next is sent."""
    run = secrets.token_hex(3)
    samples: dict[str, list[float]] = {"baseline": [], "bridge": []}
    for i in range(warm + n):
        # Alternating which goes first, too, so neither always follows the other's echo.
        pair = [("baseline", probe_room), ("bridge", portal)]
        for name, room in pair if i % 2 == 0 else reversed(pair):
            took = await one_trip(h, room, tag(run, 0 if name == "baseline" else 1, i))
            if i >= warm:
                samples[name].append(took)
    return compare_latency(samples["baseline"], samples["bridge"])


def compare_latency(baseline: list[float], bridge: list[float]) -> dict[str, object]:
    base, via = summary_ms(baseline), summary_ms(bridge)
    return {
        "baseline_ms": base, "bridge_ms": via,
        "added_ms": {"median": round(via["median"] - base["median"], 2),
                     "p95": round(via["p95"] - base["p95"], 2)},
        "ratio": {"median": round(via["median"] / base["median"], 2),
                  "p95": round(via["p95"] / base["p95"], 2)},
    }


# ---- Matrix -> remote under load ("burst") ----------------------------------------------------

async def burst(h: Harness, room: str, size: int) -> tuple[list[float], float]:
    """`size` messages sent by the person at once; each one's latency from its own send to its
    delivery, and the time until the last was delivered."""
    assert h.person is not None
    run = secrets.token_hex(3)
    person = h.person
    started: dict[str, float] = {}

    async def send(body: str) -> None:
        started[body] = time.perf_counter()
        await person.send_text(room, body)

    bodies = [tag(run, 9, i) for i in range(size)]
    first = time.perf_counter()
    await asyncio.gather(*(send(body) for body in bodies))
    arrived = await h.delivered.wait(bodies, DEADLINE)
    return [arrived[b] - started[b] for b in bodies], max(arrived.values()) - first


async def matrix_to_remote_burst(h: Harness, portal: str, probe_room: str, size: int,
                                 outbound_queue: bool, repeats: int = 1) -> dict[str, object]:
    """THE QUEUE-UNDER-LOAD MEASUREMENT. The same burst through the bare probe and through the
    bridge as it is: with the durable outbound queue (bridge/core/delivery.py) when the bridge
    uses it, else its direct Matrix -> remote path. The clock stops at the connector's
    `send_message` either way, so the two cases are comparable.

    `repeats` bursts each, in alternating order (AB, BA, ...) as the throughput runs are: one
    burst is a few seconds of a homeserver whose pace wanders, and the first of a pair meets it
    fresher. The latencies of all bursts are pooled; the drain is their mean."""
    latencies: dict[str, list[float]] = {"baseline": [], "bridge": []}
    drains: dict[str, list[float]] = {"baseline": [], "bridge": []}
    for repeat in range(repeats):
        order = [("baseline", probe_room), ("bridge", portal)]
        for name, room in order if repeat % 2 == 0 else reversed(order):
            each, drain = await burst(h, room, size)
            latencies[name].extend(each)
            drains[name].append(drain)
    result = compare_latency(latencies["baseline"], latencies["bridge"])
    return {"burst": size, "repeats": repeats, "outbound_queue": outbound_queue,
            "baseline_drain_s": round(statistics.mean(drains["baseline"]), 3),
            "bridge_drain_s": round(statistics.mean(drains["bridge"]), 3),
            **result}
