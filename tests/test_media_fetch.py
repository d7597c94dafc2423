"""The core's media fetcher against real HTTP servers on 127.0.0.1: credentials go only to the
network's own hosts (redirects included), internal addresses are refused after resolution and
on every redirect, and size, time and redirect limits hold."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from yarl import URL

from bridge.config import ConfigError
from bridge.configure import load_config
from bridge.core.media import (
    MediaFetcher,
    MediaLimits,
    MediaRefused,
    MediaScope,
    Refusal,
    _credential_allowed,
    address_problem,
)

from .support.recording import RecordingServer

TOKEN = {"Authorization": "Bearer xoxp-secret"}


@pytest.fixture
async def network() -> AsyncIterator[RecordingServer]:
    """The network's own file host (its credentials may go there)."""
    server = await RecordingServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def foreign() -> AsyncIterator[RecordingServer]:
    """Anyone else's host, which must never see the credentials."""
    server = await RecordingServer().start()
    yield server
    await server.stop()


def fetcher(*trusted: RecordingServer, **limits: float) -> MediaFetcher:
    # Both servers live on loopback, so each one a test should reach is named by the admin.
    return MediaFetcher(MediaLimits(trusted_hosts=tuple(s.host for s in trusted), **limits))


def scope_of(network: RecordingServer, **options: bool) -> MediaScope:
    return MediaScope(credential_origins=(network.origin,), **options)


async def refused(fetch, kind: Refusal) -> MediaRefused:
    with pytest.raises(MediaRefused) as info:
        await fetch
    assert info.value.kind == kind, info.value
    return info.value


async def test_credentials_reach_the_networks_host_only(network, foreign):
    media = fetcher(network, foreign)
    scope = scope_of(network)
    own = network.serve("/files/a.txt", b"mine")
    got = await media.fetch(own, scope, credentials=TOKEN)
    assert got.data == b"mine" and network.authorizations() == ["Bearer xoxp-secret"]

    # A URL in an event pointing at another host: fetched, but without the token.
    elsewhere = foreign.serve("/avatar.png", b"png", "image/png")
    got = await media.fetch(elsewhere, scope, credentials=TOKEN)
    assert got.data == b"png" and got.mimetype == "image/png"
    assert foreign.authorizations() == [None]


async def test_a_redirect_to_another_host_drops_the_credentials(network, foreign):
    media = fetcher(network, foreign)
    target = foreign.serve("/stolen", b"payload")
    start = network.redirect("/files/moved", target)
    got = await media.fetch(start, scope_of(network), credentials=TOKEN)
    assert got.data == b"payload" and str(got.url) == target
    assert network.authorizations() == ["Bearer xoxp-secret"]
    assert foreign.authorizations() == [None]


async def test_credentials_for_https_never_go_over_http(network):
    url = network.serve("/files/a.txt", b"x")
    scope = MediaScope(credential_origins=(f"https://127.0.0.1:{network.port}",))
    await fetcher(network).fetch(url, scope, credentials=TOKEN)
    assert network.authorizations() == [None]


async def test_wildcard_origins_cover_subdomains_only():
    scope = MediaScope(credential_origins=("https://*.slack.com",))
    allowed = [u for u in ("https://files.slack.com/x", "https://a.b.slack.com/x",
                           "https://slack.com/x", "https://evilslack.com/x",
                           "https://files.slack.com.evil.org/x", "http://files.slack.com/x",
                           "https://files.slack.com:8443/x")
               if _credential_allowed(URL(u), scope.credential_origins)]
    assert allowed == ["https://files.slack.com/x", "https://a.b.slack.com/x"]


async def test_loopback_is_refused_unless_the_admin_trusts_it(network):
    url = network.serve("/internal", b"secret")
    error = await refused(MediaFetcher().fetch(url), Refusal.ADDRESS)
    assert "loopback" in error.notice("internal")
    # A name that resolves to loopback is refused after resolution too.
    by_name = url.replace("127.0.0.1", "localhost")
    await refused(MediaFetcher().fetch(by_name), Refusal.ADDRESS)
    assert network.seen == []  # nothing ever connected
    # Trusting 127.0.0.1:PORT trusts exactly that host and port, not the name "localhost".
    await refused(fetcher(network).fetch(by_name), Refusal.ADDRESS)
    assert (await fetcher(network).fetch(url)).data == b"secret"


async def test_loopback_in_unusual_numeric_forms_is_refused(network):
    # The system's resolver reads these as 127.0.0.1 without the bridge's resolver being
    # asked (older aiohttp releases hand them over as IP literals).
    port = network.url("/").rsplit(":", 1)[1].split("/", 1)[0]
    for host in ("2130706433", "127.1", "0177.0.0.1", "017700000001"):
        error = await refused(MediaFetcher().fetch(f"http://{host}:{port}/internal"),
                              Refusal.ADDRESS)
        assert "unusual form" in error.reason
    assert network.seen == []


async def test_internal_addresses_are_refused_after_a_redirect(network, foreign):
    media = fetcher(network)  # the network's host is trusted; `foreign` is not
    for location in (foreign.serve("/admin", b"internal"),
                     foreign.url("/admin").replace("127.0.0.1", "localhost"),
                     "http://169.254.169.254/latest/meta-data/iam/",
                     "http://[fd00:ec2::254]/latest/", "http://10.0.0.1/",
                     "file:///etc/passwd"):
        start = network.redirect("/hop", location)
        with pytest.raises(MediaRefused) as info:
            await media.fetch(start, scope_of(network), credentials=TOKEN)
        assert info.value.kind in (Refusal.ADDRESS, Refusal.SCHEME), location
    assert foreign.seen == []


async def test_metadata_addresses_are_refused_even_when_trusted():
    media = MediaFetcher(MediaLimits(trusted_hosts=("169.254.169.254", "fd00:ec2::254")))
    for url in ("http://169.254.169.254/latest/", "http://[fd00:ec2::254]/latest/"):
        error = await refused(media.fetch(url), Refusal.ADDRESS)
        assert "metadata" in error.reason


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1",
    "169.254.1.1", "169.254.169.254", "224.0.0.1", "239.1.2.3", "0.0.0.0", "240.0.0.1",
    "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1",
    "168.63.129.16", "100.100.100.200", "fec0::1"])
def test_internal_addresses(address):
    assert address_problem(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111",
                                     "64:ff9b::808:808"])
def test_public_addresses(address):
    assert address_problem(ipaddress.ip_address(address)) is None


async def test_https_only_networks_refuse_plain_http(network):
    url = network.serve("/a", b"x")
    await refused(MediaFetcher().fetch(url, MediaScope(https_only=True)), Refusal.SCHEME)
    await refused(MediaFetcher().fetch("ftp://example.org/a"), Refusal.SCHEME)


async def test_size_cap_with_and_without_a_length(network):
    media = fetcher(network, max_bytes=10_240)
    assert len((await media.fetch(network.serve("/ok", b"x" * 10_240))).data) == 10_240
    for chunked in (False, True):
        url = network.serve(f"/big{chunked}", b"x" * 10_241, chunked=chunked)
        error = await refused(media.fetch(url), Refusal.TOO_LARGE)
        assert error.notice("big.bin") == (
            "The file big.bin was not bridged: it is larger than the bridge's limit of "
            "10 KB.")


async def test_timeout_and_redirect_limits(network):
    slow = fetcher(network, timeout_seconds=0.5)
    error = await refused(slow.fetch(network.hang("/slow")), Refusal.TIMEOUT)
    assert "0.5 seconds" in error.reason
    looping = network.redirect("/loop", network.url("/loop"))
    await refused(fetcher(network, max_redirects=3).fetch(looping), Refusal.REDIRECTS)
    assert [s.path for s in network.seen].count("/loop") == 4
    missing = await refused(fetcher(network).fetch(network.url("/nothing")),
                            Refusal.UNAVAILABLE)
    assert "404" in missing.reason


def test_config_keys_are_validated_and_named(tmp_path: Path):
    base = ("homeserver: {address: 'https://m.example.org', domain: example.org}\n"
            "appservice: {address: 'http://localhost:29340', as_token: a, hs_token: h}\n"
            "bridge: {permissions: {'*': user}}\n")
    path = tmp_path / "config.yaml"
    path.write_text(base)
    config = load_config(str(path), environ={})
    assert MediaLimits.from_settings(config["media"]) == MediaLimits()
    path.write_text(base + "media: {max_bytes: 0, trusted_hosts: ['http://x/', 'ok:80'],"
                    " max_redirects: 99}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ={})
    named = " ".join(info.value.problems)
    assert "media.max_bytes" in named and "media.trusted_hosts" in named
    assert "media.max_redirects" in named
