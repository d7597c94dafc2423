"""Ghost user ids: any remote id maps to a valid localpart and back."""

from __future__ import annotations

import logging
import re

import aiohttp
import pytest
from mautrix.appservice import AppServiceAPI
from mautrix.client.state_store.memory import MemoryStateStore
from mautrix.types import UserID
from yarl import URL

from bridge.db import PuppetStore
from bridge.matrix.ghosts import (
    INTENTS_KEPT,
    Ghosts,
    GhostTemplate,
    escape_localpart,
    unescape_localpart,
)
from bridge.networks.base import RemoteUser

VALID_LOCALPART = re.compile(r"^[a-z0-9._=\-/]+$")


@pytest.mark.parametrize("remote_id", [
    "U024BE7LH", "alice@example.org/phone", "snake_case", "=equals", "Åsa Öberg", "123",
    "weird:colon", "__",
])
def test_escape_round_trips_to_valid_localpart(remote_id):
    localpart = escape_localpart(remote_id)
    assert VALID_LOCALPART.match(localpart), localpart
    assert unescape_localpart(localpart) == remote_id


def test_distinct_ids_stay_distinct():
    assert escape_localpart("Ab") != escape_localpart("ab")
    assert escape_localpart("a_b") != escape_localpart("a=5fb")


def test_template_maps_both_ways():
    template = GhostTemplate("slack", "slack_{id}", "{displayname} (Slack)", "example.org")
    mxid = template.mxid("U024BE7LH")
    assert mxid == "@slack__u024_b_e7_l_h:example.org"
    assert template.remote_id(mxid) == "U024BE7LH"
    assert template.remote_id("@discord_1:example.org") is None
    assert template.remote_id("@slack_1:other.org") is None
    assert template.display_name(RemoteUser("U1", "Ann")) == "Ann (Slack)"
    assert template.display_name(RemoteUser("U1")) == "U1 (Slack)"


async def test_ghost_intents_are_kept_for_the_latest_senders_only():
    """A sender who speaks again gets the intent made for them before; however many senders
    speak, at most INTENTS_KEPT intents stay in memory, the least recent dropped first."""
    # Nothing is sent: intents are only made.
    session = aiohttp.ClientSession()
    try:
        api = AppServiceAPI(base_url=URL("http://127.0.0.1:9"), bot_mxid=UserID("@bot:hs"),
                            token="as", log=logging.getLogger("test"),
                            state_store=MemoryStateStore(), client_session=session)
        ghosts = Ghosts(api.bot_intent(), PuppetStore(None), {})  # type: ignore[arg-type]
        first = ghosts.intent_for(UserID("@slack_first:hs"))
        assert ghosts.intent_for(UserID("@slack_first:hs")) is first
        for i in range(INTENTS_KEPT):
            made = ghosts.intent_for(UserID(f"@slack_u{i}:hs"))
            if i == 0:
                u0 = made
            if i == INTENTS_KEPT // 2:  # u0 speaks again: now more recent than `first`
                assert ghosts.intent_for(UserID("@slack_u0:hs")) is u0
        assert len(ghosts._intents) == INTENTS_KEPT
        assert UserID("@slack_first:hs") not in ghosts._intents  # least recent, dropped
        assert ghosts._intents[UserID("@slack_u0:hs")] is u0
        again = ghosts.intent_for(UserID("@slack_first:hs"))
        assert again is not first and again.mxid == "@slack_first:hs"
    finally:
        await session.close()
