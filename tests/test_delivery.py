"""The durable outbound queue on a real Synapse: retries with back-off, Retry-After, giving up
with a notice and `retry`, and the read-only fallback with `relink` when the network revokes
a person's access."""

from __future__ import annotations

import asyncio
import secrets
from itertools import pairwise

import pytest
from mautrix.types import BeeperMessageStatusEventContent, EventType, MessageStatus

from bridge.networks.base import MatrixMessage, RemoteMessage, RemoteRoom, RemoteUser

from .support.controlled import ControlledConnector


class StallingConnector(ControlledConnector):
    """Holds its next action before checking the token, like a connector whose own queue is
    backed up: the token can expire on the way."""

    def __init__(self) -> None:
        super().__init__()
        self.stall_next = 0.0

    async def deliver(self, event):
        delay, self.stall_next = self.stall_next, 0.0
        await asyncio.sleep(delay)
        return await super().deliver(event)

FAST_RETRIES = {"delivery": {"max_attempts": 3, "backoff_seconds": 0.05,
                             "backoff_max_seconds": 0.2}}


async def linked_portal(connector: ControlledConnector, alice, homeserver, user: str):
    """Link `user` on the controlled network through the bot; a remote message then opens a
    portal. Returns (management room, portal)."""
    connector.add_account(user, "pw-1")
    room = await alice.open_management_room(homeserver.bot_mxid)
    bot = homeserver.bot_mxid
    await alice.send_text(room, f"link loopback {user} --profile Jobb")
    await alice.wait_for_notice(room, bot, "Send it as your next message")
    await alice.send_text(room, "pw-1")
    await alice.wait_for_notice(room, bot, "Reply yes to link")
    await alice.send_text(room, "yes")
    await alice.wait_for_notice(room, bot, f"Linked loopback:{user}")
    await connector.emit(RemoteMessage(
        room=RemoteRoom(f"chan-{secrets.token_hex(3)}", "Team"), sender=RemoteUser("rita"),
        receiver=alice.mxid, message_id="r-1", text="hello"))
    return room, await alice.wait_for_invite()


def sent_texts(connector: ControlledConnector) -> list[str]:
    return [e.text for e in connector.sent if isinstance(e, MatrixMessage)]


async def send_status(alice, portal, event_id: str, status: MessageStatus
                      ) -> BeeperMessageStatusEventContent:
    """The send status a client would show next to the message."""
    event = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.BEEPER_MESSAGE_STATUS
        and e.content.relates_to.event_id == event_id and e.content.status == status,
        f"send status {status}")
    return event.content


async def test_a_failing_network_is_retried_then_given_up_with_retry_offered(
        start_bridge, new_user, homeserver):
    connector = ControlledConnector(requires_authorization=False)
    await start_bridge([connector], extra=FAST_RETRIES)
    alice = await new_user("alice")
    await connector.emit(RemoteMessage(
        room=RemoteRoom("chan-down", "Down"), sender=RemoteUser("rita"), receiver=alice.mxid,
        message_id="r-1", text="hello"))
    portal = await alice.wait_for_invite()
    room = await alice.open_management_room(homeserver.bot_mxid)
    connector.down = True
    mine = await alice.send_text(portal, "are you there?")

    notice = await alice.wait_for_notice(portal, homeserver.bot_mxid, "Not delivered")
    assert 'Send "retry" in your management room' in notice
    assert [a.outcome for a in connector.attempts] == ["down"] * 3
    gaps = [b.at - a.at for a, b in pairwise(connector.attempts)]
    assert all(gap >= 0.025 for gap in gaps), gaps  # backed off, not hammered
    status = await send_status(alice, portal, mine, MessageStatus.RETRIABLE)
    assert status.network == "loopback"
    told = await alice.wait_for_notice(room, homeserver.bot_mxid, "was not delivered after 3")
    assert "Down" in told and '"retry"' in told

    connector.down = False
    await alice.send_text(room, "retry")
    await alice.wait_for_notice(room, homeserver.bot_mxid, "Sending again")
    await connector.wait_until(lambda: sent_texts(connector) == ["are you there?"],
                               "the retried message")
    await send_status(alice, portal, mine, MessageStatus.SUCCESS)


def statuses_of(events, event_id: str) -> list[MessageStatus]:
    return [e.content.status for e in events if e.type == EventType.BEEPER_MESSAGE_STATUS
            and e.content.relates_to.event_id == event_id]


@pytest.mark.parametrize("every_send", [False, True], ids=["default", "status_every_send"])
async def test_a_message_through_at_the_first_try_is_marked_sent_only_when_asked(
        start_bridge, new_user, every_send):
    connector = ControlledConnector(requires_authorization=False)
    # One attempt: a failure is given up on at once, with no "pending" before it.
    await start_bridge([connector], extra={"delivery": {
        "max_attempts": 1, "status_every_send": every_send}})
    alice = await new_user("alice")
    await connector.emit(RemoteMessage(
        room=RemoteRoom(f"chan-{secrets.token_hex(3)}", "Ticks"), sender=RemoteUser("rita"),
        receiver=alice.mxid, message_id="r-1", text="hello"))
    portal = await alice.wait_for_invite()
    first = await alice.send_text(portal, "straight through")
    await connector.wait_until(lambda: sent_texts(connector) == ["straight through"],
                               "the first message")
    # A second message that fails is told so at once, after any status of the first (a
    # room's statuses keep their order): once it is there, the first one's would be too.
    connector.down = True
    second = await alice.send_text(portal, "into the outage")
    await send_status(alice, portal, second, MessageStatus.RETRIABLE)
    events = await alice.room_events(portal)
    assert statuses_of(events, first) == ([MessageStatus.SUCCESS] if every_send else [])
    assert statuses_of(events, second) == [MessageStatus.RETRIABLE]


async def test_order_is_kept_while_the_network_recovers(start_bridge, new_user):
    connector = ControlledConnector(requires_authorization=False)
    bridge = await start_bridge([connector], extra={"delivery": {
        "max_attempts": 1000, "backoff_seconds": 0.05, "backoff_max_seconds": 0.2}})
    alice = await new_user("alice")
    await connector.emit(RemoteMessage(
        room=RemoteRoom("chan-order", "Order"), sender=RemoteUser("rita"),
        receiver=alice.mxid, message_id="r-1", text="hello"))
    portal = await alice.wait_for_invite()
    connector.down = True
    for i in range(20):
        await alice.send_text(portal, f"m{i}")
    await connector.wait_until(lambda: len(connector.attempts) >= 3, "a few failed attempts")
    connector.down = False
    await connector.wait_until(lambda: len(connector.sent) == 20, "all twenty messages")
    assert sent_texts(connector) == [f"m{i}" for i in range(20)]
    await bridge.delivery.idle()
    assert await bridge.storage.outbound.count() == 0  # nothing left behind to resend


async def test_retry_after_is_honoured(start_bridge, new_user):
    connector = ControlledConnector(requires_authorization=False)
    await start_bridge([connector], extra=FAST_RETRIES)
    alice = await new_user("alice")
    await connector.emit(RemoteMessage(
        room=RemoteRoom("chan-429", "Busy"), sender=RemoteUser("rita"), receiver=alice.mxid,
        message_id="r-1", text="hello"))
    portal = await alice.wait_for_invite()
    connector.retry_after = 0.7
    connector.rate_limited_until = float("inf")  # 429 until the test lifts it
    for i in range(5):
        await alice.send_text(portal, f"burst {i}")
    await connector.wait_until(lambda: len(connector.attempts) >= 3, "three refused attempts")
    lifted = connector.rate_limited_until = connector.attempts[-1].at
    await connector.wait_until(lambda: len(connector.sent) == 5, "the burst")
    refused = [a for a in connector.attempts if a.outcome == "rate_limited"]
    gaps = [b.at - a.at for a, b in pairwise(refused)]
    # Every retry waited for the network's Retry-After, and 429s never exhausted the
    # attempts (max_attempts is 3 here, and more than 3 were refused or nothing failed).
    assert all(gap >= 0.7 for gap in gaps), gaps
    assert all(a.at >= lifted for a in connector.attempts if a.outcome == "sent")
    assert sent_texts(connector) == [f"burst {i}" for i in range(5)]


async def test_revoked_access_turns_read_only_and_relink_sends_what_waited(
        start_bridge, new_user, homeserver):
    connector = ControlledConnector()
    bridge = await start_bridge([connector])
    alice = await new_user("alice")
    user = f"alice{secrets.token_hex(2)}"
    room, portal = await linked_portal(connector, alice, homeserver, user)
    bot = homeserver.bot_mxid
    ref = f"loopback:{user}"

    await alice.send_text(portal, "before")
    await connector.wait_until(lambda: sent_texts(connector) == ["before"], "the first message")
    connector.revoke(user, "pw-2")
    await alice.send_text(portal, "during 1")
    prompt = await alice.wait_for_notice(room, bot, "read-only")
    assert f"relink {ref}" in prompt
    await alice.wait_for_notice(portal, bot, f"relink {ref}")
    during_2 = await alice.send_text(portal, "during 2")
    await send_status(alice, portal, during_2, MessageStatus.PENDING)
    # One refused send turned it read-only; nothing else was tried on the network.
    assert [a.outcome for a in connector.attempts] == ["sent", "revoked"]
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    persona = await bridge.accounts.find_persona(account.id, ref)
    assert persona.status.value == "read_only"
    # Inbound keeps flowing while read-only.
    await connector.emit(RemoteMessage(room=connector.sent[0].room, sender=RemoteUser("rita"),
                                       receiver=alice.mxid, message_id="r-2",
                                       text="still here"))
    await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_MESSAGE
                               and e.content.body == "still here", "inbound while read-only")

    await alice.send_text(room, f"resume {ref}")
    await alice.wait_for_notice(room, bot, f"relink {ref}")
    await alice.send_text(room, f"relink {ref}")
    await alice.wait_for_notice(room, bot, "Send it as your next message")
    await alice.send_text(room, "pw-2")
    await alice.wait_for_notice(room, bot, "Reply yes to link")
    await alice.send_text(room, "yes")
    await connector.wait_until(lambda: sent_texts(connector) == ["before", "during 1", "during 2"],
                "the queued messages, in order, after relinking")
    persona = await bridge.accounts.find_persona(account.id, ref)
    assert persona.status.value == "active"
    kinds = [r.event_type for r in await bridge.security.audit.latest(30, who=account.id)]
    assert "read_only" in kinds


async def test_revoke_asks_the_network_to_revoke_before_destroying(start_bridge, new_user,
                                                                    homeserver):
    connector = ControlledConnector()
    bridge = await start_bridge([connector])
    alice = await new_user("alice")
    user = f"alice{secrets.token_hex(2)}"
    room, _ = await linked_portal(connector, alice, homeserver, user)
    await alice.send_text(room, f"revoke loopback:{user}")
    await alice.wait_for_notice(room, homeserver.bot_mxid, "is now revoked")
    assert user in connector.revoked  # the network was told, with the sealed credential
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    persona = await bridge.accounts.find_persona(account.id, f"loopback:{user}")
    assert await bridge.storage.vault_secrets.get(*persona.vault_ref, "password") is None


async def test_a_token_expired_on_the_way_is_retried_fresh_and_blames_nobody(
        start_bridge, new_user, homeserver):
    connector = StallingConnector()
    bridge = await start_bridge([connector], extra=FAST_RETRIES)
    bridge.security.minter.lifetime = 1  # tokens live one second: a stall outlives them
    alice = await new_user("alice")
    user = f"alice{secrets.token_hex(2)}"
    room, portal = await linked_portal(connector, alice, homeserver, user)
    bot = homeserver.bot_mxid

    connector.stall_next = 2.5
    late = await alice.send_text(portal, "late")
    await connector.wait_until(lambda: sent_texts(connector) == ["late"],
                               "the message, sent with a fresh token")
    status = await send_status(alice, portal, late, MessageStatus.PENDING)
    assert "fresh authorization" in status.message
    await send_status(alice, portal, late, MessageStatus.SUCCESS)
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    persona = await bridge.accounts.find_persona(account.id, f"loopback:{user}")
    assert persona.status.value == "active"  # the network refused nothing
    said = await alice.notices_from(room, bot) + await alice.notices_from(portal, bot)
    assert not [n for n in said if "read-only" in n or "refused the bridge's access" in n]
    assert await bridge.storage.failures.pending(account.id, persona.id, 0) == 0
    assert [a.outcome for a in connector.attempts] == ["sent"]  # never sent twice


async def test_a_file_that_says_it_replaces_a_message_is_reported_as_a_message(
        start_bridge, new_user, homeserver):
    """What the person is told failed is what the bridge sent: a file whose event says it
    replaces a message goes out as a new message (networks correct text only), so the notice
    speaks of a message, not of an edit."""
    connector = ControlledConnector(requires_authorization=False)
    await start_bridge([connector], extra=FAST_RETRIES)
    alice = await new_user("alice")
    await connector.emit(RemoteMessage(
        room=RemoteRoom("chan-file", "Files"), sender=RemoteUser("rita"), receiver=alice.mxid,
        message_id="r-1", text="hello"))
    portal = await alice.wait_for_invite()
    first = await alice.send_text(portal, "see the picture")
    await connector.wait_until(lambda: sent_texts(connector) == ["see the picture"],
                               "the first message")
    connector.down = True
    mxc = await alice.client.upload_media(b"a picture", mime_type="image/png",
                                          filename="pic.png")
    image = {"msgtype": "m.image", "body": "pic.png", "url": mxc,
             "info": {"mimetype": "image/png", "size": 9}}
    await alice.client.send_message_event(portal, EventType.ROOM_MESSAGE, {
        **image, "m.new_content": image,
        "m.relates_to": {"rel_type": "m.replace", "event_id": first}})

    notice = await alice.wait_for_notice(portal, homeserver.bot_mxid, "Not delivered")
    assert "your message could not be sent to loopback" in notice
    assert [a.outcome for a in connector.attempts][-3:] == ["down"] * 3
