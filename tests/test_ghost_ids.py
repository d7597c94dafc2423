"""Ghost user ids: any remote id maps to a valid localpart and back."""

from __future__ import annotations

import re

import pytest

from bridge.matrix.ghosts import GhostTemplate, escape_localpart, unescape_localpart
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
