"""Transactions that carry only the bridge's own echoes are not recorded as handled; any
transaction with something a person did still is, so a replay never acts twice."""

from __future__ import annotations

import secrets

from .conftest import SessionHomeserver
from .test_appservice import command_event, put_transaction


def ghost_echo(room_id: str, homeserver: SessionHomeserver) -> dict:
    """What the bridge's bot said into a room, as Synapse sends it back to the bridge."""
    return command_event(room_id, homeserver.bot_mxid, "Pong (an echo of the bot's reply)")


async def test_replayed_transaction_with_an_echo_and_a_command_is_answered_once(
    start_bridge, new_user, homeserver
):
    first = await start_bridge()
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    txn_id = f"mixed-{secrets.token_hex(6)}"
    events = [ghost_echo(room, homeserver), command_event(room, alice.mxid, "ping")]

    assert (await put_transaction(homeserver, txn_id, events, homeserver.hs_token))[0] == 200
    await alice.wait_for_notice(room, homeserver.bot_mxid, "Pong")
    await first.stop()
    await start_bridge()  # same database: the replay comes after a restart
    assert (await put_transaction(homeserver, txn_id, events, homeserver.hs_token))[0] == 200
    await alice.send_text(room, "version")
    await alice.wait_for_notice(room, homeserver.bot_mxid, "RelayForge")
    pongs = [n for n in await alice.notices_from(room, homeserver.bot_mxid)
             if n.startswith("Pong") and "echo" not in n]
    assert len(pongs) == 1


async def test_transaction_of_only_echoes_is_acknowledged_each_time(
    bridge, new_user, homeserver
):
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    txn_id = f"echoes-{secrets.token_hex(6)}"
    echoes = [ghost_echo(room, homeserver), ghost_echo(room, homeserver)]
    for _ in range(2):
        assert (await put_transaction(homeserver, txn_id, echoes, homeserver.hs_token)
                )[0] == 200
    # Nothing was taken for a command: the bot answers the person's next one alone.
    await alice.send_text(room, "ping")
    await alice.wait_for_notice(room, homeserver.bot_mxid, "Pong")
    notices = await alice.notices_from(room, homeserver.bot_mxid)
    assert sum(n.startswith("Pong") for n in notices) == 1
