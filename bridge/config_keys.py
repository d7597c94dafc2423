"""The config file's keys: every setting the bridge reads, with its check, what a good
value looks like and its default, and each network's common keys. config.py reads, merges
and validates a file against these."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from .schema import Key, NetworkInfo

PERMISSION_LEVELS = ("relay", "user", "admin")

_LOCALPART = re.compile(r"^[a-z0-9._=\-/]+$")
_SERVER_NAME = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_MXID = re.compile(r"^@[^:]+:.+$")




def _is_http_url(value: Any) -> bool:
    return isinstance(value, str) and re.match(r"^https?://[^\s/]+", value) is not None


def _is_db_uri(value: Any) -> bool:
    return isinstance(value, str) and (
        value.startswith(("sqlite:", "postgres://", "postgresql://"))
    )


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _is_localpart(value: Any) -> bool:
    return isinstance(value, str) and _LOCALPART.match(value) is not None


def _is_nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _is_token(value: Any) -> bool:
    # The example config's placeholder is not a token: it means -g was never run.
    return _is_nonempty_str(value) and not value.startswith("This value is generated")


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_networks(value: Any) -> bool:
    if not isinstance(value, list):
        return False
    try:
        for network in value:
            ipaddress.ip_network(str(network), strict=False)
    except ValueError:
        return False
    return True


def _is_mapping(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_host_list(value: Any) -> bool:
    from .core.media import is_valid_host_entry

    return isinstance(value, list) and all(is_valid_host_entry(v) for v in value)


def _is_listen_address(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _rate_limit_keys() -> tuple[Key, ...]:
    from .security.ratelimit import BUCKET_DEFAULTS, RateLimitSettings

    prefix = "security.rate_limits"
    keys: list[Key] = []
    for name, bucket in BUCKET_DEFAULTS.items():
        keys.append(Key(f"{prefix}.{name}.burst", _is_positive_int,
                        "a positive number of requests allowed at once", default=bucket.burst))
        keys.append(Key(f"{prefix}.{name}.per_minute", lambda v: _is_number(v) and v > 0,
                        "a positive number of requests a minute (the refill rate)",
                        default=bucket.per_minute))
    defaults = RateLimitSettings()
    keys.append(Key(f"{prefix}.unknown_token_cache_seconds", lambda v: _is_number(v) and v >= 0,
                    "seconds a refused bearer token is answered from memory (0 or more)",
                    default=defaults.unknown_token_cache_seconds))
    keys.append(Key(f"{prefix}.max_keys", _is_positive_int,
                    "a positive number of clients remembered per limit",
                    default=defaults.max_keys))
    return tuple(keys)


SCHEMA: tuple[Key, ...] = (
    Key("homeserver.address", _is_http_url, "the homeserver's client-server URL, "
        "e.g. https://matrix.example.org", required=True),
    Key("homeserver.domain", lambda v: isinstance(v, str) and bool(_SERVER_NAME.match(v)),
        "the server name in user IDs, e.g. example.org", required=True),
    Key("homeserver.verify_ssl", _is_bool, "true or false", default=True),
    Key("homeserver.public_url", _is_http_url,
        "the homeserver's URL as the internet reaches it, for media links handed to other "
        "networks (default: homeserver.address when it is https; else no such links)"),
    Key("homeserver.wait_seconds", lambda v: _is_number(v) and 0 <= v <= 3600,
        "seconds between 0 and 3600 to wait for the homeserver at start-up", default=120),
    Key("appservice.address", _is_http_url, "the URL the homeserver uses to reach the bridge, "
        "e.g. http://localhost:29340", required=True),
    Key("appservice.hostname", _is_nonempty_str, "the address to listen on, e.g. 127.0.0.1",
        default="127.0.0.1"),
    Key("appservice.port", _is_port, "a TCP port number (1-65535)", default=29340),
    Key("appservice.id", _is_nonempty_str, "a unique appservice id, e.g. relayforge",
        default="relayforge"),
    Key("appservice.bot_username", _is_localpart,
        "a Matrix localpart (lowercase letters, digits and ._=-/)", default="relayforgebot"),
    Key("appservice.bot_displayname", lambda v: v is None or isinstance(v, str),
        "a display name string", default="RelayForge bridge bot"),
    Key("appservice.as_token", _is_token,
        "a token; run with -g to generate the registration and tokens", needed_to_run_only=True),
    Key("appservice.hs_token", _is_token,
        "a token; run with -g to generate the registration and tokens", needed_to_run_only=True),
    Key("appservice.ephemeral_events", _is_bool, "true or false", default=True),
    Key("database.uri", _is_db_uri, "sqlite:FILE or postgres://user:pass@host/db",
        default="sqlite:relayforge.db"),
    Key("database.min_size", _is_positive_int, "a positive integer", default=1),
    Key("database.max_size", _is_positive_int, "a positive integer", default=10),
    Key("database.prune_interval_seconds", lambda v: _is_number(v) and v > 0,
        "a positive number of seconds between removals of expired one-time values",
        default=3600),
    Key("bridge.command_prefix", _is_nonempty_str, "a non-empty string such as !rf",
        default="!rf"),
    Key("bridge.portal_cache_size", _is_positive_int,
        "a positive number of portals kept in memory", default=10_000),
    Key("bridge.room_state_cache_size", _is_positive_int,
        "a positive number of Matrix rooms whose state is kept in memory", default=10_000),
    Key("bridge.permissions", _is_mapping,
        'a mapping of "*", a server name or a user ID to relay, user or admin', required=True),
    # End-to-bridge encryption (mautrix's terms): allow - the bot's device reads and writes
    # encrypted rooms; default - new portals are created encrypted; require - portals are
    # always encrypted and plain messages in them are not bridged.
    Key("bridge.encryption.allow", _is_bool, "true or false", default=True),
    Key("bridge.encryption.default", _is_bool, "true or false", default=False),
    Key("bridge.encryption.require", _is_bool, "true or false", default=False),
    Key("bridge.encryption.key_wait_seconds", lambda v: _is_number(v) and 1 <= v <= 600,
        "seconds between 1 and 600 to wait for a message's late room key", default=30),
    # Several bridge processes on one PostgreSQL (core/workers.py); off: one process.
    Key("bridge.workers.enabled", _is_bool, "true or false", default=False),
    Key("bridge.workers.id", lambda v: v is None or (isinstance(v, str) and 0 < len(v) <= 64
                                                    and v.isprintable()),
        "a name of at most 64 characters, different for each worker"),
    Key("bridge.workers.lease_seconds", lambda v: _is_number(v) and 1 <= v <= 600,
        "seconds between 1 and 600 after which a silent worker's rooms and sessions are "
        "taken over", default=15),
    Key("vault.provider", lambda v: v in ("file", "pkcs11"), "file or pkcs11",
        default="file"),
    Key("vault.cache_seconds", lambda v: isinstance(v, int | float) and not isinstance(v, bool)
        and 0 <= v <= 3600, "seconds between 0 and 3600", default=60),
    Key("vault.file.key_path", _is_nonempty_str, "a file path", default="relayforge-master.key"),
    Key("audit.checkpoint_file", _is_nonempty_str, "a file path",
        default="relayforge-audit.checkpoint"),
    Key("audit.checkpoint_every", _is_positive_int, "a positive number of records",
        default=100),
    Key("audit.notice_room", lambda v: isinstance(v, str) and v.startswith("!"),
        "a room ID such as !abc:example.org"),
    Key("audit.notice_interval_minutes", _is_positive_int, "a positive number of minutes",
        default=60),
    # History brought into portals (core/backfill.py); per network also
    # networks.<name>.backfill.initial_messages.
    Key("backfill.initial_messages", lambda v: isinstance(v, int) and not isinstance(v, bool)
        and 0 <= v <= 10_000, "a number of messages between 0 (off) and 10000", default=50),
    Key("backfill.max_age_days", _is_positive_int, "a positive number of days", default=30),
    Key("backfill.catch_up_limit", _is_positive_int,
        "the most messages one catch-up after downtime brings into a room", default=1000),
    Key("backfill.rate", lambda v: _is_number(v) and 0 < v <= 1000,
        "history messages per second per network, between 0 and 1000", default=20.0),
    Key("backfill.burst", _is_positive_int, "a positive number of messages", default=10),
    Key("backfill.notice_threshold", _is_positive_int,
        "from how many messages a backfill is announced in the management room", default=20),
    Key("delivery.max_attempts", _is_positive_int, "a positive number of attempts",
        default=8),
    Key("delivery.max_age_seconds", _is_positive_int, "a positive number of seconds",
        default=24 * 3600),
    Key("delivery.backoff_seconds", lambda v: _is_number(v) and 0 < v <= 60,
        "seconds between 0 and 60 (the first retry's delay)", default=1.0),
    Key("delivery.backoff_max_seconds", lambda v: _is_number(v) and 0 < v <= 86400,
        "seconds between 0 and 86400 (the longest delay between retries)", default=300.0),
    Key("delivery.status_events", _is_bool, "true or false", default=True),
    Key("delivery.status_every_send", _is_bool, "true or false", default=False),
    Key("media.max_bytes", _is_positive_int, "the largest file, in bytes, the bridge fetches "
        "from a network", default=50 * 1024 * 1024),
    Key("media.timeout_seconds", lambda v: _is_number(v) and 0 < v <= 3600,
        "seconds between 0 and 3600 (for one whole file download)", default=60.0),
    Key("media.max_redirects", lambda v: isinstance(v, int) and not isinstance(v, bool)
        and 0 <= v <= 20, "a number of redirects between 0 and 20", default=5),
    Key("media.trusted_hosts", _is_host_list,
        'a list of "host" or "host:port" entries, e.g. ["files.internal:8443"]', default=[]),
    Key("security.mfa.fresh_seconds", _is_positive_int,
        "a positive number of seconds a passed MFA check counts as fresh", default=300),
    Key("security.mfa.max_failures", _is_positive_int,
        "a positive number of wrong codes allowed per window", default=5),
    Key("security.mfa.failure_window_seconds", _is_positive_int,
        "a positive number of seconds", default=900),
    Key("security.mfa.issuer", _is_nonempty_str, "the name authenticator apps show",
        default="RelayForge"),
    Key("security.anomaly.max_failures", _is_positive_int,
        "a positive number of failures per window", default=10),
    Key("security.anomaly.window_seconds", _is_positive_int, "a positive number of seconds",
        default=3600),
    Key("security.anomaly.ipv4_prefix", lambda v: _is_positive_int(v) and v <= 32,
        "a prefix length between 1 and 32", default=24),
    Key("security.anomaly.ipv6_prefix", lambda v: _is_positive_int(v) and v <= 128,
        "a prefix length between 1 and 128", default=48),
    Key("security.anomaly.trusted_proxies", _is_networks,
        "a list of proxy addresses or networks, e.g. [127.0.0.1/32]", default=[]),
    Key("identity.default_profiles",
        lambda v: isinstance(v, list) and v and all(_is_nonempty_str(n) for n in v),
        "a list of profile names, e.g. [Jobb, Privat]", default=["Jobb", "Privat"]),
    Key("identity.max_profiles", lambda v: _is_positive_int(v) and v <= 1000,
        "the most profiles one account may have, between 1 and 1000", default=20),
    Key("provisioning.shared_secret", lambda v: isinstance(v, str) and len(v) >= 32,
        "a random string of at least 32 characters (for trusted integrations)"),
    Key("web.public_url", _is_http_url,
        "the URL people's browsers use to reach the bridge's web pages, e.g. "
        "https://bridge.example.org"),
    Key("metrics.enabled", _is_bool, "true or false", default=True),
    Key("metrics.listen", _is_listen_address,
        "host:port of a listener for /metrics alone, e.g. 127.0.0.1:29341 (or null for the "
        "appservice listener)"),
    Key("metrics.token", lambda v: isinstance(v, str) and len(v) >= 16,
        "a random string of at least 16 characters scrapers send as a bearer token (or null)"),
    *_rate_limit_keys(),
    # The MCP endpoint for people's AI agents, at {web.public_url}/mcp (bridge/mcp/).
    Key("mcp.enabled", _is_bool, "true or false", default=False),
    Key("mcp.access_token_seconds", lambda v: _is_positive_int(v) and 30 <= v <= 3600,
        "how long an agent's access token lives, 30-3600 seconds", default=600),
    Key("mcp.refresh_token_days", lambda v: _is_positive_int(v) and v <= 365,
        "how long an agent's refresh token lives unused, 1-365 days", default=30),
    Key("mcp.calls_per_minute", _is_positive_int,
        "the most tool calls one agent makes per minute", default=60),
    Key("mcp.sends_per_minute", _is_positive_int,
        "the most sends, edits, deletions and reactions one agent makes per minute",
        default=10),
    Key("mcp.registrations_per_hour", _is_positive_int,
        "the most OAuth clients one client network registers (RFC 7591) per hour",
        default=10),
    # Retention and data residency (bridge/compliance/retention.py, residency.py).
    Key("compliance.retention_days", lambda v: _is_positive_int(v) and v <= 36500,
        "a number of days between 1 and 36500 after which message maps, queued-send history "
        "and held content no hold covers are purged (or null: kept)"),
    Key("compliance.retention_interval_seconds", lambda v: _is_number(v) and v > 0,
        "a positive number of seconds between retention purges", default=86400),
    Key("compliance.export_directory", _is_nonempty_str,
        "a directory the support dashboard writes legal-hold exports into, a new directory "
        "for each (or null: exports from the command line only)"),
    Key("compliance.residency.regions",
        lambda v: isinstance(v, list) and bool(v) and all(_is_nonempty_str(r) for r in v),
        "a list of the regions data may live in, e.g. [EU] (or null: residency is off)"),
    *(Key(f"compliance.residency.stores.{store}", _is_nonempty_str,
          f"the region {what} lives in, e.g. EU")
      for store, what in (("database", "the database"),
                          ("vault", "the vault's key provider (key file or HSM)"),
                          ("homeserver_media", "the homeserver's media store"),
                          ("export_directory", "the directory legal-hold exports go to"))),
    Key("compliance.residency.networks", _is_mapping,
        "a mapping of network to a region (the whole network) or to workspaces and their "
        "regions, e.g. {slack: {T123: EU}, telegram: EU}"),
    Key("logging", _is_mapping, "a Python logging dictConfig mapping", default={
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "root": {"level": "INFO", "handlers": ["console"]},
        "disable_existing_loggers": False,
    }),
)


def _network_keys(name: str, info: NetworkInfo | None) -> tuple[Key, ...]:
    """A network's own keys (from its package), then the ones every network has."""
    prefix = f"networks.{name}"
    label = info.label if info else name.title()
    return (
        *(info.settings if info else ()),
        Key(f"{prefix}.enabled", _is_bool, "true or false", default=False),
        Key(f"{prefix}.backfill.initial_messages", lambda v: isinstance(v, int)
            and not isinstance(v, bool) and 0 <= v <= 10_000,
            "a number of messages between 0 (off) and 10000 (default: backfill.initial_messages)"),
        Key(f"{prefix}.username_template", _is_ghost_template,
            "a localpart template containing {id} once, e.g. " f"{name}_{{id}}",
            default=f"{name}_{{id}}"),
        Key(f"{prefix}.displayname_template",
            lambda v: isinstance(v, str) and "{displayname}" in v,
            "a template containing {displayname}, e.g. {displayname} (" f"{label})",
            default=f"{{displayname}} ({label})"),
    )


def _is_ghost_template(value: Any) -> bool:
    if not isinstance(value, str) or value.count("{id}") != 1:
        return False
    return _is_localpart(value.replace("{id}", "x"))
