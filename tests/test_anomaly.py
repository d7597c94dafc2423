"""Anomaly detection: repeated failures stop a person's accounts until they re-authenticate,
and a web or provisioning session used from another network is ended."""

from __future__ import annotations

import subprocess

import aiohttp
import netaddr
from mautrix.types import EventType, MessageStatus
from mmdb_writer import MMDBWriter

from .support.api import PREFIX, Api
from .support.security import wait_for_notices
from .support.web import Browser
from .test_mfa import enrol
from .test_xmpp import link_xmpp, mapped_muc

ELSEWHERE = "127.0.1.1"  # another /24 of the loopback network: "another network" here


def xmpp(prosody) -> dict:
    return {"enabled": True, "ca_file": str(prosody.ca), "nameserver": prosody.nameserver}


def from_elsewhere(cookies: aiohttp.CookieJar | None = None) -> aiohttp.ClientSession:
    """An HTTP client whose requests come from ELSEWHERE, with a copy of some cookies."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(ELSEWHERE, 0)),
                                    cookie_jar=aiohttp.CookieJar(unsafe=True))
    if cookies is not None:
        session.cookie_jar.update_cookies({c.key: c.value for c in cookies})
    return session


async def openid_token(user) -> str:
    answer = await user.client.api.request(
        "POST", f"/_matrix/client/v3/user/{user.mxid}/openid/request_token", {})
    return answer["access_token"]


async def test_wrong_mfa_codes_stop_accounts_until_verified(start_bridge, prosody, new_user,
                                                            xmpp_peer, homeserver):
    bridge = await start_bridge(extra={"networks": {"xmpp": xmpp(prosody)},
                                       "security": {"anomaly": {"max_failures": 3}}})
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    _, portal = await mapped_muc(alice, alice_xmpp, bob, homeserver)
    room = await alice.open_management_room(homeserver.bot_mxid)
    bot = homeserver.bot_mxid
    ref = f"xmpp:{alice_xmpp.jid}"
    app = await enrol(alice, room, homeserver)

    for attempt in range(1, 4):
        await alice.send_text(room, f"mfa verify {app.wrong_code()}")
        await wait_for_notices(alice, room, bot, "That code is wrong.", attempt)
    told = await alice.wait_for_notice(room, bot, "Security: 3 failed checks on your account")
    assert "(wrong MFA codes)" in told
    assert f"{ref} now need(s) re-authentication" in told
    assert f"mfa verify CODE, then resume {ref}" in told
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    persona = await bridge.accounts.find_persona(account.id, ref)
    assert persona.status.value == "needs_reauth"

    # Nothing is sent as her meanwhile: her message waits, and her client is told so.
    waiting = await alice.send_text(portal, "written while stopped")
    status = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.BEEPER_MESSAGE_STATUS
        and e.content.relates_to.event_id == waiting, "the send status of the message")
    assert status.content.status == MessageStatus.PENDING
    assert not [m for m in bob.messages if m["body"] == "written while stopped"]

    # An earlier check does not count any more: resuming needs a new one.
    await alice.send_text(room, f"resume {ref}")
    refused = await alice.wait_for_notice(room, bot, "needs re-authentication: verify with")
    assert f"then resume {ref}" in refused
    await alice.send_text(room, f"mfa verify {app.code()}")
    await alice.wait_for_notice(room, bot, "Verified.")
    await alice.send_text(room, f"resume {ref}")
    await alice.wait_for_notice(room, bot, f"{ref} is now active.")
    await alice.send_text(portal, "after verifying")
    await bob.wait_for(lambda m: m["body"] == "after verifying", "the message after resuming")
    kinds = [r.event_type for r in await bridge.security.audit.latest(50, who=account.id)]
    assert "anomaly" in kinds


def change_password(prosody, jid: str, password: str) -> None:
    """The account's password changes on the server (as if its owner changed it elsewhere)."""
    user, domain = jid.split("@")
    for args in (["deluser", jid], ["register", user, domain, password]):
        subprocess.run(["prosodyctl", "--config", str(prosody.config), *args], check=True,
                       capture_output=True)


async def test_credentials_refused_by_the_network_stop_the_persona(start_bridge, prosody,
                                                                   new_user, xmpp_peer,
                                                                   homeserver):
    bridge = await start_bridge(extra={"networks": {"xmpp": xmpp(prosody)},
                                       "security": {"anomaly": {"max_failures": 2}}})
    alice = await new_user("alice")
    alice_xmpp = await xmpp_peer("alice")
    await alice_xmpp.stop()
    room = await link_xmpp(alice, alice_xmpp, homeserver)
    bot = homeserver.bot_mxid
    ref = f"xmpp:{alice_xmpp.jid}"

    change_password(prosody, alice_xmpp.jid, "a-new-password")
    prosody.restart()  # the bridge's session reconnects, with the old password
    told = await alice.wait_for_notice(room, bot, f"xmpp refused the credentials of {ref}")
    assert f"relink {ref}" in told and "needs re-authentication" in told
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    assert (await bridge.accounts.find_persona(account.id, ref)).status.value == "needs_reauth"

    # Each of these was said once already, when the account was first linked.
    await alice.send_text(room, f"relink {ref}")
    await wait_for_notices(alice, room, bot, "Send it as your next message", 2)
    await alice.send_text(room, "a-new-password")
    await wait_for_notices(alice, room, bot, "Reply yes to link", 2)
    await alice.send_text(room, "yes")
    await wait_for_notices(alice, room, bot, f"Linked {ref}", 2)
    assert (await bridge.accounts.find_persona(account.id, ref)).status.value == "active"


async def test_session_from_another_network_is_ended(start_bridge, new_user, homeserver):
    bridge = await start_bridge(extra={"security": {"anomaly": {"max_failures": 2}}})
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    bot = homeserver.bot_mxid
    api = Api(homeserver.appservice_url)
    web = Browser(homeserver.appservice_url)
    elsewhere = from_elsewhere()
    try:
        # A Matrix OpenID token, first used from here.
        token = await openid_token(alice)
        status, _ = await api.call("GET", f"{PREFIX}/whoami", token=token)
        assert status == 200
        status, body = await api.call("GET", f"{PREFIX}/whoami", token=token, http=elsewhere)
        assert (status, body["errcode"]) == (401, "RF_SESSION_NETWORK_CHANGED")
        assert "used from another network" in body["error"]
        status, body = await api.call("GET", f"{PREFIX}/whoami", token=token)
        assert status == 401  # the session stays ended, wherever it comes from
        status, _ = await api.call("GET", f"{PREFIX}/whoami", token=await openid_token(alice))
        assert status == 200  # signing in again works

        # A web session from the bot's login link, then its cookie in another network.
        await alice.send_text(room, "login-link")
        link = await alice.wait_for_notice(room, bot, "/auth/matrix?token=")
        status, page = await web.matrix_sign_in(link.rsplit("token=", 1)[1].strip())
        assert status == 200 and "Account Management" in page
        moved = from_elsewhere(web.http.cookie_jar)
        try:
            async with moved.get(f"{homeserver.appservice_url}/account/settings") as r:
                assert r.url.path == "/auth/sign-in"
        finally:
            await moved.close()
        status, page = await web.get("/account/settings")
        assert status == 200 and "Sign in to RelayForge" in page  # ended for this browser too
    finally:
        await elsewhere.close()
        await web.close()
        await api.http.close()

    told = await alice.wait_for_notice(room, bot, "Security: 2 failed checks")
    assert "(requests from another network)" in told and "nothing was stopped" in told
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    changes = [r for r in await bridge.security.audit.latest(50, who=account.id)
               if r.event_type == "session_network_changed"]
    assert len(changes) == 2 and all("127.0.1.0/24" in r.details for r in changes)


async def test_geoip_country_change_ends_a_session(start_bridge, new_user, homeserver,
                                                   tmp_path):
    # A tiny country database: this /24 of the loopback network is in Sweden, the next in
    # Norway. With /8 prefixes, only the country tells them apart.
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    writer.insert_network(netaddr.IPSet(["127.0.0.0/24"]), {"country": {"iso_code": "SE"}})
    writer.insert_network(netaddr.IPSet(["127.0.1.0/24"]), {"country": {"iso_code": "NO"}})
    database = tmp_path / "countries.mmdb"
    writer.to_db_file(str(database))
    await start_bridge(extra={"security": {"anomaly": {
        "ipv4_prefix": 8, "geoip_database": str(database)}}})
    alice = await new_user("alice")
    api = Api(homeserver.appservice_url)
    elsewhere = from_elsewhere()
    try:
        token = await openid_token(alice)
        status, _ = await api.call("GET", f"{PREFIX}/whoami", token=token)
        assert status == 200
        status, body = await api.call("GET", f"{PREFIX}/whoami", token=token, http=elsewhere)
        assert (status, body["errcode"]) == (401, "RF_SESSION_NETWORK_CHANGED")
    finally:
        await elsewhere.close()
        await api.http.close()
