"""The one way the bridge fetches a file a remote network points it at.

Connectors hand over URLs found in what other people send (a Slack event's file URL, an XMPP
contact's out-of-band link). Fetching them naively leaks credentials and opens the bridge's
network to anyone who can send a message, so every fetch here:

- attaches a network's credentials only to hosts that belong to that network (its
  `MediaScope.credential_origins`), checked again on every redirect: a redirect elsewhere, or
  from https to http, drops them;
- refuses loopback, private, link-local, CGNAT, multicast, unspecified, reserved and cloud
  metadata addresses, checked after DNS resolution and on every redirect. The check runs in
  the resolver aiohttp connects with, so the address checked is the address connected to
  (a second DNS answer cannot swap it: DNS rebinding);
- follows at most `max_redirects` redirects, gives up after `timeout_seconds` in all, and
  stops reading at `max_bytes`.

Hosts an admin runs on an internal address (a test stand-in, an in-house upload server) are
allowed only when named: `media.trusted_hosts`, or a network's own configured endpoints
(`MediaScope.trusted_origins`). Trusting a host lets the bridge reach it; it never gives it
credentials. Metadata addresses are refused even then.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

import aiohttp
import attrs
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

log = logging.getLogger("relayforge.media")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_REDIRECTS = (301, 302, 303, 307, 308)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Cloud instance metadata services: refused even on a trusted host, since what they answer
# (instance credentials) is never a file anyone meant to share.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
    "169.254.170.2",  # AWS ECS task credentials
    "fd00:ec2::254",  # AWS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "168.63.129.16",  # Azure's wire server (a public address, so named here)
    "192.0.0.192",  # Oracle Cloud
))
# Prefixes that carry an IPv4 address inside an IPv6 one (NAT64, 6to4): the IPv4 one counts.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._\-]+))"
                        r"(?::(?P<port>\d{1,5}))?$")


class Refusal(StrEnum):
    TOO_LARGE = "too_large"
    ADDRESS = "address_not_allowed"
    SCHEME = "scheme_not_allowed"
    REDIRECTS = "too_many_redirects"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"


class MediaRefused(Exception):
    """The file was not fetched; `reason` says why in words a person understands."""

    def __init__(self, kind: Refusal, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.kind = kind
        self.reason = reason
        # For the log only (may name hosts and addresses the room should not learn).
        self.detail = detail

    def notice(self, name: str) -> str:
        """The sentence the room is told."""
        return f"The file {name} was not bridged: {self.reason}."


@attrs.frozen
class FetchedMedia:
    data: bytes = attrs.field(repr=False)
    mimetype: str
    # Where the file finally came from (after redirects), for its name.
    url: URL


@attrs.frozen
class MediaLimits:
    """The admin's `media.*` settings."""

    max_bytes: int = 50 * 1024 * 1024
    timeout_seconds: float = 60.0
    max_redirects: int = 5
    # "host" or "host:port" entries that may be on internal addresses.
    trusted_hosts: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, media: Mapping[str, Any] | None) -> MediaLimits:
        media = media or {}
        default = cls()
        return cls(max_bytes=int(media.get("max_bytes") or default.max_bytes),
                   timeout_seconds=float(media.get("timeout_seconds")
                                         or default.timeout_seconds),
                   max_redirects=int(media.get("max_redirects", default.max_redirects)),
                   trusted_hosts=tuple(media.get("trusted_hosts") or ()))


@attrs.frozen
class MediaScope:
    """What one network allows (declared by its connector, see `Connector.media_scope`)."""

    # Origins ("https://files.slack.com", "https://*.slack.com") that may receive the
    # network's credentials. A pattern's scheme and port must match exactly.
    credential_origins: tuple[str, ...] = ()
    # Endpoints the admin configured for this network (a stand-in's address in tests), which
    # may be on internal addresses like `media.trusted_hosts`.
    trusted_origins: tuple[str, ...] = ()
    # Refuse plain http (where the network itself is https).
    https_only: bool = False


def is_valid_host_entry(value: Any) -> bool:
    """A `media.trusted_hosts` entry: "host", "host:port", an IPv6 address or "[v6]:port"."""
    if not isinstance(value, str):
        return False
    try:
        _, port = _parse_host_entry(value)
    except ValueError:
        return False
    return port is None or 0 < port < 65536


def _parse_host_entry(entry: str) -> tuple[str, int | None]:
    if _as_address(entry.strip()) is not None:
        return entry.strip().lower(), None
    match = _HOST_PORT.match(entry.strip())
    if not match:
        raise ValueError(f"not a host or host:port: {entry!r}")
    host = (match["v6"] or match["host"]).lower().rstrip(".")
    return host, int(match["port"]) if match["port"] else None


def _origin_parts(origin: str) -> tuple[str, str, int]:
    url = URL(origin)
    if url.scheme not in _DEFAULT_PORTS or not url.host:
        raise ValueError(f"not an http(s) origin: {origin!r}")
    return url.scheme, url.host.lower().rstrip("."), url.port or _DEFAULT_PORTS[url.scheme]


def origin_of(url: str) -> str:
    """The origin ("scheme://host:port") of a configured endpoint URL."""
    scheme, host, port = _origin_parts(url)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def address_problem(address: IPAddress) -> str | None:
    """Why the bridge may not connect to `address` for a file, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and (address in _NAT64 or address in _NAT64_LOCAL):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_problem(embedded)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in ipaddress.ip_network(
            "100.64.0.0/10"):
        return "a shared (CGNAT) address"
    if address.is_private or address.is_reserved or not address.is_global:
        return "a private address"
    # Deprecated site-local space (fec0::/10), which Python 3.11 counts as global.
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a private address"
    return None


def _as_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


class _Trust:
    """The hosts an admin named, for one fetch (the admin's list plus the network's own)."""

    def __init__(self, entries: Iterable[str], origins: Iterable[str]) -> None:
        self._hosts: set[tuple[str, int | None]] = {_parse_host_entry(e) for e in entries}
        for origin in origins:
            _, host, port = _origin_parts(origin)
            self._hosts.add((host, port))

    def trusts(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        return (host, port) in self._hosts or (host, None) in self._hosts


def _refuse_address(host: str, problem: str) -> MediaRefused:
    return MediaRefused(Refusal.ADDRESS, f"its address is not allowed ({problem})",
                        f"host {host}")


class _CheckingResolver(AbstractResolver):
    """Resolves as usual, then refuses the host when any of its addresses is internal.
    aiohttp connects to exactly the addresses returned here."""

    def __init__(self, trust: _Trust) -> None:
        self._trust = trust
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            address = _as_address(result["host"])
            if address is None:
                raise _refuse_address(host, "not an IP address")
            problem = address_problem(address)
            if problem is None:
                continue
            if address in METADATA_ADDRESSES or not self._trust.trusts(host, port):
                raise _refuse_address(f"{host} ({address})", problem)
        return results

    async def close(self) -> None:
        await self._inner.close()


def _credential_allowed(url: URL, patterns: Iterable[str]) -> bool:
    """Does `url` belong to one of the origins ("https://files.slack.com", or with a
    wildcard "https://*.slack.com" for its subdomains) that may receive credentials?"""
    host = (url.host or "").lower().rstrip(".")
    port = url.port or _DEFAULT_PORTS.get(url.scheme, 0)
    for pattern in patterns:
        subdomains = "://*." in pattern
        scheme, pattern_host, pattern_port = _origin_parts(pattern.replace("://*.", "://", 1))
        if scheme != url.scheme or pattern_port != port:
            continue
        if host == pattern_host and not subdomains:
            return True
        if subdomains and host.endswith(f".{pattern_host}"):
            return True
    return False


class MediaFetcher:
    """Fetches remote files for every connector under the same rules (one per bridge)."""

    def __init__(self, limits: MediaLimits | None = None) -> None:
        self.limits = limits or MediaLimits()

    async def fetch(self, url: str, scope: MediaScope | None = None, *,
                    credentials: Mapping[str, str] | None = None,
                    ssl_context: ssl.SSLContext | None = None) -> FetchedMedia:
        """The file at `url`; `credentials` (headers) go only where `scope` allows.
        Raises MediaRefused saying why nothing was fetched."""
        scope = scope or MediaScope()
        trust = _Trust(self.limits.trusted_hosts, scope.trusted_origins)
        connector = aiohttp.TCPConnector(resolver=_CheckingResolver(trust),
                                         use_dns_cache=False, ssl=ssl_context or True)
        try:
            async with asyncio.timeout(self.limits.timeout_seconds), aiohttp.ClientSession(
                    connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
                    timeout=aiohttp.ClientTimeout(total=self.limits.timeout_seconds)) as http:
                return await self._follow(http, URL(url), scope, trust, credentials or {})
        except TimeoutError as e:
            raise MediaRefused(Refusal.TIMEOUT, "it took longer than "
                               f"{self.limits.timeout_seconds:g} seconds to fetch") from e
        except aiohttp.ClientError as e:
            raise MediaRefused(Refusal.UNAVAILABLE, "it could not be fetched",
                               type(e).__name__) from e
        except ValueError as e:  # a URL yarl or aiohttp cannot use
            raise MediaRefused(Refusal.UNAVAILABLE, "its address is not a usable URL") from e

    async def _follow(self, http: aiohttp.ClientSession, url: URL, scope: MediaScope,
                      trust: _Trust, credentials: Mapping[str, str]) -> FetchedMedia:
        for _ in range(self.limits.max_redirects + 1):
            self._check_url(url, scope, trust)
            # Checked at every hop, so a redirect to another host (or down to http) drops them.
            headers = dict(credentials) if _credential_allowed(
                url, scope.credential_origins) else {}
            if credentials and not headers:
                log.debug("Fetching %s without the network's credentials", url.host)
            async with http.get(url, headers=headers, allow_redirects=False) as response:
                if response.status in _REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise MediaRefused(Refusal.UNAVAILABLE, "it could not be fetched",
                                           "a redirect without a Location")
                    url = url.join(URL(location))
                    continue
                if response.status != 200:
                    raise MediaRefused(Refusal.UNAVAILABLE, "it could not be fetched "
                                       f"(the server answered {response.status})")
                data = await self._read(response)
                mimetype = response.content_type or "application/octet-stream"
                return FetchedMedia(data, mimetype, url)
        raise MediaRefused(Refusal.REDIRECTS, "it was redirected more than "
                           f"{self.limits.max_redirects} times")

    def _check_url(self, url: URL, scope: MediaScope, trust: _Trust) -> None:
        host = url.host
        if url.scheme not in _DEFAULT_PORTS or not host:
            raise MediaRefused(Refusal.SCHEME, "only http and https links are fetched",
                               f"scheme {url.scheme!r}")
        port = url.port or _DEFAULT_PORTS[url.scheme]
        trusted = trust.trusts(host, port)
        if scope.https_only and url.scheme != "https" and not trusted:
            raise MediaRefused(Refusal.SCHEME, "it is not on an https address",
                               f"host {host}")
        # aiohttp does not ask the resolver about IP literals: check them here.
        address = _as_address(host)
        if address is None and host.replace(".", "").isdigit():
            # 2130706433, 127.1, 0177.0.0.1: not an address `ipaddress` reads, but one the
            # system's resolver turns into 127.0.0.1 without asking ours. Never a real name.
            raise _refuse_address(host, "an IPv4 address in an unusual form")
        if address is not None:
            problem = address_problem(address)
            if problem and (address in METADATA_ADDRESSES or not trusted):
                raise _refuse_address(host, problem)

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.limits.max_bytes
        if (response.content_length or 0) > limit:
            raise self._too_large()
        data = bytearray()
        async for chunk in response.content.iter_chunked(65536):
            data += chunk
            if len(data) > limit:
                raise self._too_large()
        return bytes(data)

    def _too_large(self) -> MediaRefused:
        limit = _size(self.limits.max_bytes)
        return MediaRefused(Refusal.TOO_LARGE, f"it is larger than the bridge's limit of {limit}")


def _size(count: int) -> str:
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if count >= factor:
            return f"{count / factor:.3g} {unit}"
    return f"{count} bytes"
