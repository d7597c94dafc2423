"""The appservice endpoint: authentication, idempotent transactions, health and metrics."""

from __future__ import annotations

import asyncio
import os
import secrets

import aiohttp

from .conftest import SessionHomeserver


def command_event(room_id: str, sender: str, body: str) -> dict:
    """An m.room.message exactly as Synapse puts it in a transaction."""
    return {
        "type": "m.room.message",
        "room_id": room_id,
        "sender": sender,
        "event_id": f"$test-{secrets.token_hex(8)}",
        "origin_server_ts": 1_700_000_000_000,
        "content": {"msgtype": "m.text", "body": body},
        "unsigned": {},
    }


async def put_transaction(homeserver: SessionHomeserver, txn_id: str, events: list[dict],
                          token: str | None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    url = f"{homeserver.appservice_url}/_matrix/app/v1/transactions/{txn_id}"
    async with aiohttp.ClientSession() as session, session.put(
        url, json={"events": events}, headers=headers
    ) as response:
        return response.status, await response.json()


async def test_wrong_or_missing_hs_token_is_rejected_and_nothing_handled(
    bridge, new_user, homeserver
):
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    event = command_event(room, alice.mxid, "ping")

    status, body = await put_transaction(homeserver, "forged-1", [event], token="wrong")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await put_transaction(homeserver, "forged-2", [event], token=None)
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
    async with aiohttp.ClientSession() as session:
        for path in ("/_matrix/app/v1/users/@x:localhost", "/_matrix/app/v1/rooms/%23x:localhost"):
            async with session.get(f"{homeserver.appservice_url}{path}?access_token=nope") as r:
                assert r.status == 403
        async with session.post(f"{homeserver.appservice_url}/_matrix/app/v1/ping",
                                json={}) as r:
            assert r.status == 401

    # A real command afterwards is answered; the forged "ping" never was.
    await alice.send_text(room, "version")
    await alice.wait_for_notice(room, homeserver.bot_mxid, "RelayForge")
    notices = await alice.notices_from(room, homeserver.bot_mxid)
    assert not any(n.startswith("Pong") for n in notices), notices


async def test_transaction_replayed_after_restart_is_handled_once(
    start_bridge, new_user, homeserver
):
    first = await start_bridge()
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    txn_id = f"replay-{secrets.token_hex(6)}"
    events = [command_event(room, alice.mxid, "ping")]

    status, _ = await put_transaction(homeserver, txn_id, events, homeserver.hs_token)
    assert status == 200
    await alice.wait_for_notice(room, homeserver.bot_mxid, "Pong")

    await first.stop()
    await start_bridge()  # same database: a restart
    status, _ = await put_transaction(homeserver, txn_id, events, homeserver.hs_token)
    assert status == 200
    # The reply to a transaction is sent before it is acknowledged, so by now a second
    # "Pong" would be visible. Send a marker through Synapse to be sure all is flushed.
    await alice.send_text(room, "version")
    await alice.wait_for_notice(room, homeserver.bot_mxid, "RelayForge")
    pongs = [n for n in await alice.notices_from(room, homeserver.bot_mxid)
             if n.startswith("Pong")]
    assert len(pongs) == 1


async def test_health_and_metrics(bridge, new_user, homeserver):
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    await alice.send_text(room, "ping")
    await alice.wait_for_notice(room, homeserver.bot_mxid, "Pong")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{homeserver.appservice_url}/_matrix/mau/ready") as r:
            assert r.status == 200
        async with session.get(f"{homeserver.appservice_url}/metrics") as r:
            assert r.status == 200
            text = await r.text()
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines() if line and not line.startswith("#")
    }
    # The invite and the "ping" may arrive in one transaction or in two.
    assert values['relayforge_appservice_transactions_total{outcome="handled"}'] >= 1
    assert values['relayforge_matrix_events_total{type="m.room.message"}'] >= 1
    assert values["relayforge_appservice_transaction_seconds_count"] >= 1
    assert 'relayforge_matrix_event_seconds_bucket{le="0.005",type="m.room.message"}' in values
    # Matrix room state is kept in the database, not in mautrix's default JSON file.
    assert not await asyncio.to_thread(os.path.exists, "mx-state.json")


async def test_reused_transaction_id_with_new_events_is_handled(bridge, new_user, homeserver):
    """A restarted Synapse numbers its transactions from 1 again: same id, new events."""
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    txn_id = f"reused-{secrets.token_hex(6)}"
    first = [command_event(room, alice.mxid, "ping")]
    second = [command_event(room, alice.mxid, "whoami")]
    assert (await put_transaction(homeserver, txn_id, first, homeserver.hs_token))[0] == 200
    assert (await put_transaction(homeserver, txn_id, second, homeserver.hs_token))[0] == 200
    assert (await put_transaction(homeserver, txn_id, first, homeserver.hs_token))[0] == 200
    await alice.wait_for_notice(room, homeserver.bot_mxid, "You are")
    notices = await alice.notices_from(room, homeserver.bot_mxid)
    assert sum(n.startswith("Pong") for n in notices) == 1


async def test_command_sent_while_bridge_is_down_is_answered_after_restart(
    start_bridge, new_user, homeserver
):
    first = await start_bridge()
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    await first.stop()
    await alice.send_text(room, "whoami")  # the homeserver queues it for the appservice
    await start_bridge()
    await alice.wait_for_notice(room, homeserver.bot_mxid, "You are")


async def test_generated_registration_is_loaded_by_synapse(homeserver):
    """The session's Synapse runs with the registration `-g` wrote: its as_token works."""
    from ruamel.yaml import YAML

    registration = YAML(typ="safe").load(homeserver.registration_path.read_text())
    async with aiohttp.ClientSession() as session, session.get(
        f"{homeserver.synapse.url}/_matrix/client/v3/account/whoami",
        headers={"Authorization": f"Bearer {registration['as_token']}"},
    ) as response:
        assert response.status == 200
        assert (await response.json())["user_id"] == homeserver.bot_mxid
