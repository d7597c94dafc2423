"""A small ready-made workspace, shared by the fake's own tests and connector tests."""

from __future__ import annotations

import attrs

from .models import Channel, Team, User
from .server import FakeSlack


@attrs.define
class World:
    team: Team
    alice: User  # the bridge's user: her token is what the connector holds
    bob: User  # remote people
    carol: User
    general: Channel  # public, all three
    secret: Channel  # private: alice and bob
    hidden: Channel  # private: bob and carol only, invisible to alice
    dm: Channel  # alice <-> bob
    group: Channel  # group DM of all three
    token: str  # alice's user token for the fake's default app (every scope)


def build_world(slack: FakeSlack, team_name: str = "Acme") -> World:
    team = slack.create_team(team_name)
    alice = slack.create_user(team, "alice", display_name="Alice A", real_name="Alice Liddell")
    bob = slack.create_user(team, "bob", display_name="Bobby")
    carol = slack.create_user(team, "carol")
    return World(
        team=team, alice=alice, bob=bob, carol=carol,
        general=slack.create_channel(team, "general", [alice, bob, carol], is_general=True),
        secret=slack.create_channel(team, "secret", [alice, bob], private=True),
        hidden=slack.create_channel(team, "hidden", [bob, carol], private=True),
        dm=slack.open_dm(alice, bob), group=slack.open_group_dm([alice, bob, carol]),
        token=slack.issue_token(alice))
