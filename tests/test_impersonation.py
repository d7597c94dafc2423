"""Impersonation tokens at the connector's door: only a fresh, matching, unused token sends."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.networks.base import MatrixMessage, MatrixReaction, RemoteRoom
from bridge.security.impersonation import (
    Action,
    ImpersonationRefused,
    Target,
    TokenMinter,
)

from .support.loopback import LoopbackConnector

ROOM = RemoteRoom("C-general", "general")


@pytest.fixture
async def guarded(start_bridge):
    connector = LoopbackConnector(requires_authorization=True)
    bridge = await start_bridge(connectors=[connector])
    return bridge, connector


def message(token: str | None, room: RemoteRoom = ROOM) -> MatrixMessage:
    return MatrixMessage(room=room, sender_mxid="@alice:localhost", event_id="$e1",
                         text="hello", authorization=token)


def mint(minter: TokenMinter, **overrides) -> str:
    claims = {"persona": "loopback:alice", "profile": "Jobb", "account": "@alice:localhost",
              "action": Action.SEND, "target": Target("loopback", ROOM.remote_id)}
    claims.update(overrides)
    return minter.mint(**claims)


async def test_valid_token_sends_and_is_audited(guarded):
    bridge, connector = guarded
    token = mint(bridge.security.minter)
    result = await connector.deliver(message(token))
    assert result is not None
    assert (await connector.next_received()).text == "hello"
    [record] = await bridge.security.audit.latest(1)
    details = json.loads(record.details)
    jti = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["jti"]
    assert (record.event_type, record.persona, record.account) == (
        "impersonated_send", "loopback:alice", "@alice:localhost")
    assert details["jti"] == jti
    assert details["remote_id"] == result.remote_id


@pytest.mark.parametrize("case", [
    "expired", "other channel", "other network", "other action", "replayed", "other key",
    "missing", "garbled",
])
async def test_refused_tokens_send_nothing(guarded, case):
    bridge, connector = guarded
    minter = bridge.security.minter
    if case == "expired":
        token = mint(minter, now=time.time() - 120)
    elif case == "other channel":
        token = mint(minter, target=Target("loopback", "C-random"))
    elif case == "other network":
        token = mint(minter, target=Target("slack", ROOM.remote_id))
    elif case == "other action":
        token = mint(minter, action=Action.DELETE)
    elif case == "replayed":
        token = mint(minter)
        await connector.deliver(message(token))
        await connector.next_received()
    elif case == "other key":
        token = mint(TokenMinter(Ed25519PrivateKey.generate()))
    elif case == "missing":
        token = None
    else:
        token = mint(minter)[:-6] + "AAAAAA"
    audit_before = await bridge.security.audit.latest(100)
    with pytest.raises(ImpersonationRefused):
        await connector.deliver(message(token))
    assert connector.received.empty()
    assert await bridge.security.audit.latest(100) == audit_before


async def test_token_for_a_message_does_not_allow_a_reaction(guarded):
    bridge, connector = guarded
    token = mint(bridge.security.minter, action=Action.SEND)
    with pytest.raises(ImpersonationRefused, match="allows send, not react"):
        await connector.deliver(MatrixReaction(room=ROOM, sender_mxid="@alice:localhost",
                                               event_id="$r", target_id="m1", key="👍",
                                               authorization=token))
    assert connector.received.empty()


def test_tokens_cannot_live_longer_than_a_minute():
    with pytest.raises(ValueError, match="1-60 s"):
        TokenMinter(Ed25519PrivateKey.generate(), lifetime=61)
