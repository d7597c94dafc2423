"""Checks that run before the bridge writes anything: a port that is taken, a homeserver that
does not answer or a database that cannot be reached end in one clear line naming the key
to change, and no key file or database is left behind by a start that could not work."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from importlib.metadata import entry_points
from pathlib import Path

import aiohttp

from . import __version__
from .compliance.residency import store_problems
from .config import Config
from .schema import CONNECTOR_ENTRY_POINTS


def connector_problems(config: Config, available: set[str] | None = None) -> list[str]:
    """An enabled network needs its connector installed."""
    if available is None:
        available = {ep.name for ep in entry_points(group=CONNECTOR_ENTRY_POINTS)}
    return [f"networks.{network}.enabled: the {network} connector is not available in "
            f"RelayForge {__version__}; set it to false"
            for network in config.network_names
            if config[f"networks.{network}.enabled"] and network not in available]


def _port_problem(key: str, host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # The same option the listener sets, so a port in TIME_WAIT is not reported as taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return (f"{key}: {host}:{port} is already in use (is another bridge running?); "
                        f"stop it or choose another port")
            return f"{key}: cannot listen on {host}:{port} ({e.strerror or e})"
    return None


def _listen_problems(config: Config) -> list[str]:
    problems = [_port_problem("appservice.port", config["appservice.hostname"],
                              config["appservice.port"])]
    metrics = config.get("metrics.listen")
    if metrics:
        host, _, port = str(metrics).rpartition(":")
        problems.append(_port_problem("metrics.listen", host.strip("[]"), int(port)))
    return [p for p in problems if p]


def _path_problems(config: Config) -> list[str]:
    """Files the bridge will create must have a directory it can write to."""
    paths = {"audit.checkpoint_file": config["audit.checkpoint_file"]}
    if config["vault.provider"] == "file":
        paths["vault.file.key_path"] = config["vault.file.key_path"]
    uri = config["database.uri"]
    if uri.startswith("sqlite:"):
        paths["database.uri"] = uri.removeprefix("sqlite:").removeprefix("//").split("?")[0]
    problems = []
    for key, path in paths.items():
        directory = Path(path).resolve().parent
        if not directory.is_dir():
            problems.append(f"{key}: the directory {directory} does not exist; create it or "
                            "choose another path")
        elif not Path(path).exists() and not os.access(directory, os.W_OK):
            problems.append(f"{key}: cannot create {path} (the directory is not writable)")
    return problems


async def _homeserver_problem(config: Config) -> str | None:
    """Wait up to homeserver.wait_seconds for the homeserver to answer."""
    address = config["homeserver.address"].rstrip("/")
    wait = config["homeserver.wait_seconds"]
    deadline = time.monotonic() + wait
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while True:
            try:
                async with session.get(f"{address}/_matrix/client/versions",
                                       ssl=None if config["homeserver.verify_ssl"] else False
                                       ) as response:
                    if response.status == 200:
                        return None
                    last = f"HTTP {response.status}"
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                last = str(e) or type(e).__name__
            if time.monotonic() >= deadline:
                return (f"homeserver.address: {address} did not answer within {wait:g} s "
                        f"({last}); start the homeserver or fix the address "
                        "(homeserver.wait_seconds sets how long the bridge waits)")
            await asyncio.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


async def _database_problem(config: Config) -> str | None:
    uri = config["database.uri"]
    if not uri.startswith(("postgres://", "postgresql://")):
        return None
    import asyncpg

    try:
        connection = await asyncpg.connect(uri, timeout=10)
    except (TimeoutError, OSError, asyncpg.PostgresError) as e:
        # The URI holds the password: name the key, never the value.
        return f"database.uri: cannot connect to PostgreSQL ({type(e).__name__}: {e})"
    await connection.close()
    return None


def _vault_problem(config: Config) -> str | None:
    """An HSM that refuses the PIN (or has no token of that label) is named before the wait
    for the homeserver. The file provider is checked when it opens: opening may create it."""
    if config["vault.provider"] != "pkcs11":
        return None
    from .security.vault import VaultError, build_provider

    try:
        provider = build_provider(config)
        provider.open()
        provider.close()
    except VaultError as e:
        return f"vault: {e}"
    return None


async def preflight(config: Config) -> list[str]:
    """Every reason the bridge cannot start, found without writing anything."""
    # Data residency first: a store outside the allowed regions must not even be opened.
    problems = store_problems(config)
    if problems:
        return problems
    problems = connector_problems(config) + _listen_problems(config) + _path_problems(config)
    if problems:
        return problems
    vault = _vault_problem(config)
    if vault:
        return [vault]
    database = await _database_problem(config)
    if database:
        return [database]
    homeserver = await _homeserver_problem(config)
    return [homeserver] if homeserver else []
