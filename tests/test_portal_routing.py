"""Remote <-> Matrix routing through a connector (the test-only loopback network)."""

from __future__ import annotations

import asyncio
import secrets

from mautrix.types import EventType, Membership

from bridge.networks.base import (
    MatrixEdit,
    MatrixMessage,
    MatrixReaction,
    MatrixRedaction,
    RemoteEdit,
    RemoteMessage,
    RemoteReaction,
    RemoteRedaction,
    RemoteRoom,
    RemoteUser,
)

from .support.loopback import EagerLoopbackConnector


def remote_names() -> tuple[RemoteRoom, RemoteUser]:
    tag = secrets.token_hex(3)
    # Upper case and a space: the ghost id must escape them, reversibly.
    return (RemoteRoom(f"chan-{tag}", name=f"Remote channel {tag}"),
            RemoteUser(f"U{tag.upper()} x", display_name=f"Rita Remote {tag}"))


async def test_remote_message_arrives_from_ghost_and_matrix_replies_reach_connector(
    bridge, loopback, new_user, homeserver
):
    alice = await new_user("alice")
    room, rita = remote_names()
    await loopback.emit(RemoteMessage(room=room, sender=rita, receiver=alice.mxid,
                                      message_id="r-1", text="hello from afar"))
    portal = await alice.wait_for_invite()

    ghost_msg = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE
        and e.content.body == "hello from afar", "the remote message")
    ghost = ghost_msg.sender
    assert ghost.startswith("@loopback_") and ghost.endswith(":localhost")
    assert ghost != homeserver.bot_mxid
    member = await alice.client.get_state_event(portal, EventType.ROOM_MEMBER, ghost)
    assert member.membership == Membership.JOIN
    assert member.displayname == f"{rita.display_name} (Loopback)"
    name = await alice.client.get_state_event(portal, EventType.ROOM_NAME)
    assert name.name == room.name

    # A reply from Matrix names the remote message it answers.
    reply_id = await alice.send_text(portal, "hi Rita", reply_to=ghost_msg.event_id)
    sent = await loopback.next_received()
    assert isinstance(sent, MatrixMessage)
    assert (sent.text, sent.reply_to, sent.room.remote_id, sent.sender_mxid) == (
        "hi Rita", "r-1", room.remote_id, alice.mxid)
    assert sent.event_id == reply_id
    my_remote_id = "lb-msg-1"  # what the loopback network assigned to it

    # An edit and a redaction of that message name its remote id.
    await alice.send_text(portal, "hi Rita!", edit_of=reply_id)
    edit = await loopback.next_received()
    assert isinstance(edit, MatrixEdit)
    assert (edit.target_id, edit.text) == (my_remote_id, "hi Rita!")

    await alice.client.redact(portal, reply_id, reason="typo")
    redaction = await loopback.next_received()
    assert isinstance(redaction, MatrixRedaction)
    assert (redaction.target_id, redaction.target_is_reaction, redaction.reason) == (
        my_remote_id, False, "typo")

    # A reaction to the remote message names it too.
    await alice.client.react(portal, ghost_msg.event_id, "👍")
    reaction = await loopback.next_received()
    assert isinstance(reaction, MatrixReaction)
    assert (reaction.target_id, reaction.key) == ("r-1", "👍")


async def test_remote_edit_reaction_and_redaction_are_mirrored(bridge, loopback, new_user):
    alice = await new_user("alice")
    room, rita = remote_names()
    await loopback.emit(RemoteMessage(room=room, sender=rita, receiver=alice.mxid,
                                      message_id="r-1", text="first"))
    portal = await alice.wait_for_invite()
    original = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE and e.content.body == "first",
        "the first message")

    reply = RemoteMessage(room=room, sender=rita, message_id="r-2", text="second",
                          reply_to="r-1")
    await loopback.emit(reply)
    second = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE and e.content.body == "second",
        "the reply")
    assert second.content.get_reply_to() == original.event_id

    await loopback.emit(RemoteEdit(room=room, sender=rita, target_id="r-1", text="first!"))
    edit = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE
        and e.content.get_edit() == original.event_id, "the edit")
    assert edit.content.body == "first!"

    await loopback.emit(RemoteReaction(room=room, sender=rita, reaction_id="x-1",
                                       target_id="r-1", key="🎉"))
    reaction = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.REACTION, "the reaction")
    assert reaction.content.relates_to.event_id == original.event_id
    assert reaction.content.relates_to.key == "🎉"

    await loopback.emit(RemoteRedaction(room=room, sender=rita, target_id="r-2"))
    await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_REDACTION and e.redacts == second.event_id,
        "the redaction")

    # The same remote message delivered twice by the network appears once.
    third = RemoteMessage(room=room, sender=rita, message_id="r-3", text="third")
    await loopback.emit(third)
    await loopback.emit(third)
    await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE and e.content.body == "third",
        "the third message")
    bodies = [e.content.body for e in await alice.room_events(portal)
              if e.type == EventType.ROOM_MESSAGE]
    assert bodies.count("third") == 1


async def test_an_answer_racing_the_send_is_not_lost(start_bridge, new_user):
    eager = EagerLoopbackConnector()
    await start_bridge([eager])
    alice = await new_user("alice")
    room, rita = remote_names()
    await eager.emit(RemoteMessage(room=room, sender=rita, receiver=alice.mxid,
                                   message_id="r-1", text="anyone?"))
    portal = await alice.wait_for_invite()
    mine = await alice.send_text(portal, "me")
    reaction = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.REACTION, "the reaction to my message")
    assert (reaction.content.relates_to.event_id, reaction.content.relates_to.key) == (mine, "👀")


async def test_two_messages_at_once_make_one_portal(bridge, loopback, new_user):
    alice = await new_user("alice")
    room, rita = remote_names()
    await asyncio.gather(*(
        loopback.emit(RemoteMessage(room=room, sender=rita, receiver=alice.mxid,
                                    message_id=f"r-{i}", text=f"burst {i}"))
        for i in range(5)
    ))
    portal = await alice.wait_for_invite()
    # All five in the one room: a second portal would have taken some of them.
    events = await alice.room_events(portal)
    assert sorted(e.content.body for e in events if e.type == EventType.ROOM_MESSAGE) == [
        f"burst {i}" for i in range(5)]
