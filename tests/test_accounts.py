"""Accounts, profiles, personas and merges, end to end through the bot on a real Synapse."""

from __future__ import annotations

import time

import pytest
from mautrix.types import EventType

from bridge.db.login_identity import LoginIdentity
from bridge.identity.errors import IdentityError

from .support.matrix import DEADLINE


async def space_invites(user, since: str | None = None) -> tuple[dict[str, str], str]:
    """Spaces the user is invited to, by name (with `since`: those added since then), and
    where the next sync starts."""
    found: dict[str, str] = {}
    response = await user.client.sync(since=since, timeout=1000 if since else 0)
    for room_id, room in response.get("rooms", {}).get("invite", {}).items():
        state = {(e["type"], e.get("state_key")): e["content"]
                 for e in room["invite_state"]["events"]}
        if state.get(("m.room.create", ""), {}).get("type") == "m.space":
            found[state.get(("m.room.name", ""), {}).get("name")] = room_id
    return found, response["next_batch"]


async def wait_for_space_invites(user, names: set[str]) -> dict[str, str]:
    """The spaces are made after the person's first answer: wait until they are invited
    (incremental syncs: Synapse answers a repeated initial sync from its cache)."""
    deadline = time.monotonic() + DEADLINE
    spaces, since = await space_invites(user)
    while spaces.keys() != names:
        assert time.monotonic() < deadline, f"{user.mxid} was invited only to {set(spaces)}"
        more, since = await space_invites(user, since)
        spaces.update(more)
    return spaces


async def test_first_contact_creates_account_with_default_profiles_and_spaces(
    bridge, new_user, homeserver
):
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    await alice.send_text(room, "account")
    # The first command is answered first; the two profile spaces follow the answer.
    text = await alice.wait_for_notice(room, homeserver.bot_mxid, "Profiles:")
    assert f"Matrix users: {alice.mxid}" in text
    assert "  Jobb" in text and "  Privat" in text
    spaces = await wait_for_space_invites(alice, {"Jobb", "Privat"})
    await alice.send_text(room, "account")
    text = await alice.wait_for_notice(room, homeserver.bot_mxid, "Profiles:")
    assert f"  Jobb - space {spaces['Jobb']}" in text
    assert f"  Privat - space {spaces['Privat']}" in text
    account = await bridge.storage.accounts.by_mxid(alice.mxid)
    [record] = await bridge.security.audit.latest(1, who=account.id)
    assert record.event_type == "account_created"


async def test_profile_commands(bridge, new_user, homeserver):
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    bot = homeserver.bot_mxid
    await alice.send_text(room, "profile create Hobby")
    await alice.wait_for_notice(room, bot, 'Created the profile "Hobby"')
    await alice.send_text(room, "profile create hobby")
    await alice.wait_for_notice(room, bot, 'You already have a profile called "hobby".')
    await alice.send_text(room, 'profile rename Hobby "Side projects"')
    await alice.wait_for_notice(room, bot, 'Renamed "Hobby" to "Side projects".')
    account = await bridge.storage.accounts.by_mxid(alice.mxid)
    await bridge.accounts.add_persona(account.id, "Side projects", platform="xmpp",
                                      external_user_id="alice@example.org",
                                      display_name="Alice", scopes=[], actor=alice.mxid)
    await alice.send_text(room, 'profile delete "Side projects"')
    await alice.wait_for_notice(room, bot, "still has 1 linked account(s). Unlink them first.")
    await alice.send_text(room, "unlink xmpp:alice@example.org")
    await alice.wait_for_notice(room, bot, "Unlinked xmpp:alice@example.org")
    await alice.send_text(room, 'profile delete "Side projects"')
    await alice.wait_for_notice(room, bot, 'Deleted the profile "Side projects".')
    names = [p.name for p in await bridge.storage.profiles.for_account(account.id)]
    assert names == ["Jobb", "Privat"]


async def test_persona_descriptor_and_unlink_destroys_credentials(bridge, new_user, homeserver):
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    persona = await bridge.accounts.add_persona(
        account.id, "Jobb", platform="slack", external_user_id="U024BE7LH",
        display_name="Alice W", scopes=["chat:write", "channels:read"], actor=alice.mxid)
    assert persona.descriptor() == {
        "platform": "slack", "external_user_id": "U024BE7LH", "display_name": "Alice W",
        "avatar_hash": None, "scopes": ["chat:write", "channels:read"], "last_refresh": None}
    await bridge.security.vault.seal(*persona.vault_ref, "refresh_token", "xoxe-secret")
    await alice.send_text(room, "account")
    text = await alice.wait_for_notice(room, homeserver.bot_mxid, "Profiles:")
    assert "slack:U024BE7LH (Alice W) - active" in text

    # Another person cannot link the same Slack account: refused, nothing changes.
    bob = await new_user("bob")
    bob_account = await bridge.accounts.for_matrix_user(bob.mxid)
    with pytest.raises(IdentityError, match="already linked to a RelayForge account"):
        await bridge.accounts.add_persona(bob_account.id, "Jobb", platform="slack",
                                          external_user_id="U024BE7LH", display_name="x",
                                          scopes=[], actor=bob.mxid)
    assert (await bridge.storage.personas.by_external("slack", "U024BE7LH")).id == persona.id

    await alice.send_text(room, "unlink slack:U024BE7LH")
    await alice.wait_for_notice(room, homeserver.bot_mxid, "credentials were destroyed")
    assert await bridge.storage.vault_secrets.get(*persona.vault_ref, "refresh_token") is None


async def test_merge_from_matrix_moves_everything_and_admin_can_reverse(
    start_bridge, new_user, homeserver
):
    alice_work = await new_user("alicework")
    alice_home = await new_user("alicehome")
    admin = await new_user("admin")
    bridge = await start_bridge(permissions={"*": "relay", "localhost": "user",
                                             admin.mxid: "admin"})
    bot = homeserver.bot_mxid
    work_room = await alice_work.open_management_room(bot)
    home_room = await alice_home.open_management_room(bot)
    work = await bridge.accounts.for_matrix_user(alice_work.mxid)
    home = await bridge.accounts.for_matrix_user(alice_home.mxid)
    await bridge.storage.accounts.set_credits(work.id, 100)
    await bridge.storage.accounts.set_credits(home.id, 150)
    persona = await bridge.accounts.add_persona(
        home.id, "Privat", platform="telegram", external_user_id="42", display_name="Alice",
        scopes=[], actor=alice_home.mxid)
    await bridge.storage.identities.add(LoginIdentity(
        "https://accounts.example", "sub-home", "example", home.id, "alice@home.example",
        True, True, "sign_up"))

    await alice_work.send_text(work_room, "merge start")
    text = await alice_work.wait_for_notice(work_room, bot, "Merge code:")
    code = text.split("Merge code: ")[1].split()[0]
    await alice_work.send_text(work_room, f"merge confirm {code}")
    await alice_work.wait_for_notice(work_room, bot, "from the other account's management room")
    await alice_home.send_text(home_room, f"merge confirm {code.lower()}")
    done = await alice_home.wait_for_notice(home_room, bot, "Merged this account")
    assert "150 credits and 1 sign-in provider(s) moved" in done

    merged = await bridge.accounts.view(work.id)
    assert merged.account.credits == 250
    assert merged.matrix_users == [alice_work.mxid, alice_home.mxid]
    assert [p.profile.name for p in merged.profiles] == ["Jobb", "Privat"]  # same names merged
    privat = next(p for p in merged.profiles if p.profile.name == "Privat")
    assert [p.id for p in privat.personas] == [persona.id]
    tombstone = await bridge.storage.accounts.get(home.id)
    assert (tombstone.status.value, tombstone.merged_into) == ("merged", work.id)

    # The code was single-use.
    await alice_home.send_text(home_room, f"merge confirm {code}")
    await alice_home.wait_for_notice(home_room, bot, "unknown, expired or already used")

    # Support reverses it from the tombstone's provenance.
    [merge] = await bridge.storage.merges.involving(home.id)
    admin_room = await admin.open_management_room(bot)
    await admin.send_text(admin_room, f"admin find {alice_home.mxid}")
    found = await admin.wait_for_notice(admin_room, bot, f"Merge {merge.id}")
    assert f"Account {work.id}" in found
    await admin.send_text(admin_room, f"admin unmerge {merge.id}")
    await admin.wait_for_notice(admin_room, bot, f"Reversed merge {merge.id}.")
    restored = await bridge.accounts.view(home.id)
    assert restored.account.credits == 150 and restored.matrix_users == [alice_home.mxid]
    assert [i.subject for i in restored.identities] == ["sub-home"]
    home_privat = next(p for p in restored.profiles if p.profile.name == "Privat")
    assert [p.id for p in home_privat.personas] == [persona.id]
    assert (await bridge.accounts.view(work.id)).account.credits == 100
    actors = {r.actor for r in await bridge.security.audit.latest(50)
              if r.event_type == "admin_action"}
    assert admin.mxid in actors


async def test_last_sign_in_method_cannot_be_removed(bridge):
    account = await bridge.accounts.create_account(actor="system")
    await bridge.storage.identities.add(LoginIdentity(
        "https://idp.example", "only", "idp", account.id, "a@example.org", True, True,
        "sign_up"))
    with pytest.raises(IdentityError, match="last way to sign in"):
        await bridge.accounts.remove_identity(account.id, "https://idp.example", "only",
                                              actor="system")
    assert await bridge.storage.identities.get("https://idp.example", "only") is not None


async def test_admin_commands_need_admin(bridge, new_user, homeserver):
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    await alice.send_text(room, "admin find @x:localhost")
    await alice.wait_for_notice(room, homeserver.bot_mxid, '"admin" needs the admin permission')
    notices = await alice.notices_from(room, homeserver.bot_mxid)
    assert not any(str(EventType.ROOM_MESSAGE) in n for n in notices)
