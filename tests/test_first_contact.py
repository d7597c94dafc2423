"""A new person's first command is answered before their profile spaces are made; spaces
still owed when the bridge stops are made on its next start (real Synapse, both databases)."""

from __future__ import annotations

import asyncio
import time

from .support.matrix import DEADLINE
from .test_accounts import wait_for_space_invites


async def test_spaces_owed_when_the_bridge_stopped_are_made_on_the_next_start(
        start_bridge, new_user, homeserver):
    bridge = await start_bridge()
    # The spaces wait for the person's first answer; here the bridge stops before it.
    bridge.spaces.after_answer_seconds = 3600
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    deadline = time.monotonic() + DEADLINE
    while (account := await bridge.storage.accounts.by_mxid(alice.mxid)) is None:
        assert time.monotonic() < deadline, "the account was never made"
        await asyncio.sleep(0.1)
    profiles = await bridge.storage.profiles.for_account(account.id)
    assert sorted(p.name for p in profiles) == ["Jobb", "Privat"]
    # Nothing was made before the stop: both spaces are owed, in the database.
    assert len(await bridge.storage.profiles.without_space(account.id)) == 2
    await bridge.stop()
    restarted = await start_bridge()

    spaces = await wait_for_space_invites(alice, {"Jobb", "Privat"})
    recorded = {p.name: p.space_mxid
                for p in await restarted.storage.profiles.for_account(account.id)}
    assert recorded == spaces  # each made once, and recorded
    await alice.send_text(room, "account")
    text = await alice.wait_for_notice(room, homeserver.bot_mxid, "Profiles:")
    assert f"  Jobb - space {spaces['Jobb']}" in text
