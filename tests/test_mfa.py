"""Multi-factor authentication: enrolment through the bot, single-use codes, wrong codes
limited across restarts, and the MFA gate before linking a high-risk account (bot and
provisioning API) on the real XMPP server."""

from __future__ import annotations

import asyncio
import logging
import secrets

from mautrix.types import EventType, MessageType

from bridge.security.policy import Policy

from .support.api import PREFIX, Api
from .support.security import Authenticator, wait_for_notices
from .test_config import MINIMAL, problems_of

SECRET = secrets.token_urlsafe(32)


def xmpp_settings(prosody, **security) -> dict:
    return {"networks": {"xmpp": {"enabled": True, "ca_file": str(prosody.ca),
                                  "nameserver": prosody.nameserver}},
            "policy": {"high_risk": {"networks": ["xmpp"]}},
            "provisioning": {"shared_secret": SECRET},
            "security": {"mfa": security}}


async def enrol(user, room, homeserver) -> Authenticator:
    """`mfa setup`, read the URI as an authenticator app would, confirm with a code."""
    bot = homeserver.bot_mxid
    await user.send_text(room, "mfa setup")
    app = Authenticator(await user.wait_for_notice(room, bot, "otpauth://"))
    await user.send_text(room, f"mfa verify {app.code()}")
    await user.wait_for_notice(room, bot, "MFA is set up")
    return app


async def test_enrolment_single_use_codes_and_rate_limit(start_bridge, new_user, homeserver,
                                                         caplog):
    caplog.set_level(logging.DEBUG)
    bridge = await start_bridge()
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    bot = homeserver.bot_mxid

    await alice.send_text(room, "mfa verify 123456")
    await alice.wait_for_notice(room, bot, "You have no MFA yet: set up MFA with `mfa setup`.")

    await alice.send_text(room, "mfa setup")
    shown = await alice.wait_for_notice(room, bot, "otpauth://")
    app = Authenticator(shown)
    assert app.uri.startswith("otpauth://totp/RelayForge:") and "issuer=RelayForge" in app.uri
    qr = await alice.wait_for_event(
        room, lambda e: e.sender == bot and e.type == EventType.ROOM_MESSAGE
        and e.content.msgtype == MessageType.IMAGE, "the QR code")
    png = await alice.client.download_media(qr.content.url)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and qr.content.info.width > 100

    code = app.code()
    await alice.send_text(room, f"mfa verify {code}")
    await alice.wait_for_notice(room, bot, "MFA is set up")
    # The secret is sealed in the vault: not in the database in plaintext, not in the log,
    # and the messages that showed it are gone from the room once it is confirmed.
    for table in ("mfa_factor", "vault_secret", "audit_log", "one_time_secret"):
        rows = await bridge.storage.db.fetch(f"SELECT * FROM {table}")
        assert app.secret not in repr([dict(r) for r in rows]), table
    bridge_log = "\n".join(r.getMessage() for r in caplog.records if r.name != "mau.http")
    assert app.secret not in bridge_log
    redacted = await alice.client.get_event(room, qr.event_id)
    assert not redacted.content.serialize().get("url")

    await alice.send_text(room, f"mfa verify {code}")
    await alice.wait_for_notice(room, bot, "That code was used already")

    # Wrong codes: the replay counted as one; four more lock MFA for a while.
    for attempt in range(1, 5):
        await alice.send_text(room, f"mfa verify {app.wrong_code()}")
        await wait_for_notices(alice, room, bot, "That code is wrong.", attempt)
    [*_, last] = await wait_for_notices(alice, room, bot, "That code is wrong.", 4)
    assert "Too many wrong codes: try again after" in last and "(in 15 minutes)" in last
    await alice.send_text(room, f"mfa verify {app.code()}")
    await wait_for_notices(alice, room, bot, "Too many wrong codes", 2)

    # The count lives in the database: a restart does not lift the limit.
    await bridge.stop()
    bridge = await start_bridge()
    await alice.send_text(room, f"mfa verify {app.code()}")
    await wait_for_notices(alice, room, bot, "Too many wrong codes", 3)

    account = await bridge.accounts.for_matrix_user(alice.mxid)
    kinds = [r.event_type for r in await bridge.security.audit.latest(50, who=account.id)]
    assert kinds.count("mfa_enrolled") == 1 and kinds.count("mfa_failed") == 5
    assert "mfa_verified" not in kinds


async def test_high_risk_link_waits_for_a_fresh_mfa_check(start_bridge, prosody, new_user,
                                                          xmpp_peer, homeserver):
    # A check counts as fresh for one second here, so the test can watch it go stale.
    bridge = await start_bridge(extra=xmpp_settings(prosody, fresh_seconds=1))
    alice = await new_user("alice")
    alice_xmpp = await xmpp_peer("alice")
    await alice_xmpp.stop()
    room = await alice.open_management_room(homeserver.bot_mxid)
    bot = homeserver.bot_mxid

    # Without MFA, the bridge says so before asking for a password.
    await alice.send_text(room, f"link xmpp {alice_xmpp.jid}")
    refused = await alice.wait_for_notice(room, bot, "needs multi-factor authentication")
    assert "set up MFA with `mfa setup`" in refused

    app = await enrol(alice, room, homeserver)
    await asyncio.sleep(1.5)  # the enrolment's check is no longer fresh
    await alice.send_text(room, f"link xmpp {alice_xmpp.jid}")
    await alice.wait_for_notice(room, bot, "Send it as your next message")
    await alice.send_text(room, alice_xmpp.password)
    gate = await alice.wait_for_notice(room, bot, "needs a fresh MFA check")
    assert "verify with `mfa verify CODE` first" in gate
    assert "the bridge's policy treats every xmpp account as high-risk" in gate
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    assert (await bridge.accounts.view(account.id)).profiles[0].personas == []
    assert not [b for b in await alice.notices_from(room, bot) if "Reply yes to link" in b]

    await alice.send_text(room, app.wrong_code())
    await alice.wait_for_notice(room, bot, "That code is wrong.")
    await alice.send_text(room, f"mfa verify {app.code()}")
    await alice.wait_for_notice(room, bot, "Reply yes to link")
    await alice.send_text(room, "yes")
    await alice.wait_for_notice(room, bot, f"Linked xmpp:{alice_xmpp.jid}")
    [persona] = (await bridge.accounts.view(account.id)).profiles[0].personas
    assert persona.status.value == "active"


async def test_provisioning_link_stops_before_consent_without_mfa(start_bridge, prosody,
                                                                  new_user, xmpp_peer,
                                                                  homeserver):
    await start_bridge(extra=xmpp_settings(prosody, fresh_seconds=1))
    api = Api(homeserver.appservice_url)
    try:
        carol, dave = await new_user("carol"), await new_user("dave")
        carol_xmpp, dave_xmpp = await xmpp_peer("carol"), await xmpp_peer("dave")
        await carol_xmpp.stop()
        await dave_xmpp.stop()

        # Dave has no MFA: refused, and told how to set it up.
        status, body = await api.call("POST", f"{PREFIX}/link/xmpp", token=SECRET,
                                      query={"user_id": dave.mxid},
                                      body={"identifier": dave_xmpp.jid})
        assert status == 400 and "set up MFA with `mfa setup`" in body["error"]

        room = await carol.open_management_room(homeserver.bot_mxid)
        app = await enrol(carol, room, homeserver)
        await asyncio.sleep(1.5)  # the enrolment's check is no longer fresh
        who = {"user_id": carol.mxid}
        status, step = await api.call("POST", f"{PREFIX}/link/xmpp", token=SECRET, query=who,
                                      body={"identifier": carol_xmpp.jid})
        assert status == 200
        status, step = await api.call(
            "POST", f"{PREFIX}/link/steps/{step['flow_id']}", token=SECRET, query=who,
            body={"answers": {"password": carol_xmpp.password}})
        assert status == 200 and "verify with `mfa verify CODE` first" in step["message"]
        assert [f["name"] for f in step["fields"]] == ["mfa_code"]
        status, step = await api.call(
            "POST", f"{PREFIX}/link/steps/{step['flow_id']}", token=SECRET, query=who,
            body={"answers": {"mfa_code": app.code()}})
        assert status == 200 and [f["name"] for f in step["fields"]] == ["consent"]
        status, done = await api.call(
            "POST", f"{PREFIX}/link/steps/{step['flow_id']}", token=SECRET, query=who,
            body={"answers": {"consent": "yes"}})
        assert status == 200 and done["done"] is True
        assert done["persona"]["descriptor"]["external_user_id"] == carol_xmpp.jid
    finally:
        await api.http.close()


def test_high_risk_policy_and_its_config_errors(tmp_path):
    policy = Policy({"high_risk": {"networks": ["telegram"],
                                   "discord_corporate_servers": ["4242"],
                                   "slack_enterprise_grid": True}})
    assert "every telegram account" in policy.high_risk_reason("telegram", [])
    assert "4242" in policy.high_risk_reason("discord", ["server:1", "server:4242"])
    assert policy.high_risk_reason("discord", ["server:1"]) is None
    assert "Enterprise Grid" in policy.high_risk_reason("slack", ["enterprise_grid"])
    assert policy.high_risk_reason("xmpp", ["enterprise_grid"]) is None

    problems = problems_of(tmp_path, MINIMAL + (
        "policy:\n    high_risk:\n        slack_enterprise_grid: sometimes\n"
        "security:\n    mfa:\n        fresh_seconds: 0\n"
        "    anomaly:\n        ipv4_prefix: 33\n        trusted_proxies: [not-an-address]\n"
        "        geoip_database: nowhere.mmdb\n"))
    assert sorted(p.split(":")[0] for p in problems) == [
        "policy.high_risk.slack_enterprise_grid", "security.anomaly.geoip_database",
        "security.anomaly.ipv4_prefix", "security.anomaly.trusted_proxies",
        "security.mfa.fresh_seconds"]
