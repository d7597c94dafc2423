"""XMPP connection set-up against a real Prosody: every address and SRV target tried in turn,
certificates really checked, SCRAM-PLUS channel binding, and a consent that says what was
checked."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest

from .support.prosody_hosts import DUAL, FALLBACK, GOOD, WRONG, HostsServer, start_hosts_server


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostsServer]:
    server = start_hosts_server(tmp_path_factory.mktemp("prosody-hosts"))
    yield server
    server.shutdown()


def xmpp_settings(hosts: HostsServer, trusted: bool = True) -> dict:
    settings = {"enabled": True, "nameserver": hosts.nameserver}
    if trusted:
        settings["ca_file"] = str(hosts.ca)
    return {"networks": {"xmpp": settings}}


def account(hosts: HostsServer, domain: str) -> tuple[str, str]:
    password = secrets.token_urlsafe(12)
    return hosts.register(f"alice{secrets.token_hex(3)}", domain, password), password


async def link_until_consent(alice, homeserver, jid: str, password: str,
                             expect: str = "Reply yes to link") -> tuple[str, str]:
    """Start linking `jid` through the bot; the management room and the bot's answer."""
    room = await alice.open_management_room(homeserver.bot_mxid)
    await alice.send_text(room, f"link xmpp {jid} --profile Jobb")
    await alice.wait_for_notice(room, homeserver.bot_mxid, "Send it as your next message")
    await alice.send_text(room, password)
    return room, await alice.wait_for_notice(room, homeserver.bot_mxid, expect)


async def link(alice, homeserver, jid: str, password: str) -> str:
    room, consent = await link_until_consent(alice, homeserver, jid, password)
    await alice.send_text(room, "yes")
    await alice.wait_for_notice(room, homeserver.bot_mxid, f"Linked xmpp:{jid}")
    return consent


async def personas(bridge, alice) -> list:
    found = await bridge.accounts.for_matrix_user(alice.mxid)
    return [p for profile in (await bridge.accounts.view(found.id)).profiles
            for p in profile.personas]


def mechanisms_seen_by_server(hosts: HostsServer, jid: str) -> list[str]:
    """The SASL mechanism of each session Prosody authenticated as `jid`, from its log."""
    chosen: dict[str, str] = {}
    seen = []
    for line in hosts.log.read_text().splitlines():
        if match := re.search(r" (c2s\w+)\tdebug\tReceived\[c2s_unauthed\]: <auth .*"
                              r"mechanism='([\w-]+)'", line):
            chosen[match[1]] = match[2]
        elif match := re.search(r" (c2s\w+)\tinfo\tAuthenticated as (\S+)$", line):
            if match[2] == jid:
                seen.append(chosen.get(match[1], "?"))
    return seen


async def test_trusted_certificate_links_and_the_consent_says_what_was_checked(
        start_bridge, hosts, new_user, homeserver):
    bridge = await start_bridge(extra=xmpp_settings(hosts))
    alice = await new_user("alice")
    jid, password = account(hosts, GOOD)
    consent = await link(alice, homeserver, jid, password)
    assert (f"over TLSv1.2 (certificate chain verified against the configured CA file for "
            f"{GOOD} (issued by RelayForge test CA))") in consent
    assert "certificate verified)" not in consent  # the old fixed phrase
    [persona] = await personas(bridge, alice)
    assert (persona.external_user_id, persona.status.value) == (jid, "active")


async def test_scram_plus_with_channel_binding_is_used_when_offered(
        start_bridge, hosts, new_user, homeserver):
    await start_bridge(extra=xmpp_settings(hosts))
    alice = await new_user("alice")
    jid, password = account(hosts, GOOD)
    consent = await link(alice, homeserver, jid, password)
    assert "signed in with SCRAM-SHA-1-PLUS over TLSv1.2" in consent
    # The server agrees: the verification login and the session opened after linking both
    # authenticated with channel binding.
    assert mechanisms_seen_by_server(hosts, jid) == ["SCRAM-SHA-1-PLUS"] * 2


async def test_untrusted_certificate_is_refused(start_bridge, hosts, new_user, homeserver):
    # No CA file: the system's CA store does not know the test CA.
    bridge = await start_bridge(extra=xmpp_settings(hosts, trusted=False))
    alice = await new_user("alice")
    jid, password = account(hosts, GOOD)
    _, refused = await link_until_consent(alice, homeserver, jid, password,
                                          expect="does not trust")
    assert (f"The XMPP server of {GOOD} presented a certificate the bridge does not trust "
            "(unable to get local issuer certificate), so the password was not sent. "
            "Nothing was stored.") in refused
    assert await personas(bridge, alice) == []
    assert mechanisms_seen_by_server(hosts, jid) == []


async def test_certificate_for_another_host_is_refused(start_bridge, hosts, new_user,
                                                       homeserver):
    bridge = await start_bridge(extra=xmpp_settings(hosts))
    alice = await new_user("alice")
    jid, password = account(hosts, WRONG)
    _, refused = await link_until_consent(alice, homeserver, jid, password,
                                          expect="does not trust")
    assert f"certificate is not valid for '{WRONG}'" in refused
    assert await personas(bridge, alice) == []
    assert mechanisms_seen_by_server(hosts, jid) == []


async def test_ipv6_address_that_does_not_answer_falls_back_to_ipv4(start_bridge, hosts,
                                                                    new_user, homeserver):
    # The server's host has an AAAA record (::1, nothing listens) tried first, then its A.
    bridge = await start_bridge(extra=xmpp_settings(hosts))
    alice = await new_user("alice")
    jid, password = account(hosts, DUAL)
    consent = await link(alice, homeserver, jid, password)
    assert f"for {DUAL}" in consent
    [persona] = await personas(bridge, alice)
    assert persona.external_user_id == jid
    assert mechanisms_seen_by_server(hosts, jid) == ["SCRAM-SHA-1-PLUS"] * 2


async def test_dead_srv_target_falls_back_to_the_next(start_bridge, hosts, new_user,
                                                      homeserver):
    bridge = await start_bridge(extra=xmpp_settings(hosts))
    alice = await new_user("alice")
    jid, password = account(hosts, FALLBACK)
    await link(alice, homeserver, jid, password)
    [persona] = await personas(bridge, alice)
    assert persona.external_user_id == jid
    assert mechanisms_seen_by_server(hosts, jid) == ["SCRAM-SHA-1-PLUS"] * 2
