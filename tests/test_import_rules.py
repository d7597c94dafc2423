"""The layers, as docs/adding-a-network.md and the README draw them, read from the source with
`ast`: networks never import each other or the core's internals, `core/` never imports a
network, `db/` imports nothing above it, SQL lives in `db/`, and no two modules import each
other. Each failure names the file, the line and the rule."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = ROOT / "bridge"

#: The neutral modules a network package may use besides its own: the interface and its
#: shared helpers, the config shapes, the one media fetcher, the token-refresh types and the
#: one request-parsing layer (for a network's own web endpoint).
NETWORK_MAY_IMPORT = (
    "bridge.networks.base",
    "bridge.networks.login",
    "bridge.networks.seen",
    "bridge.networks.lanes",
    "bridge.networks.lazy",
    "bridge.networks.history",
    "bridge.schema",
    "bridge.config",
    "bridge.core.media",
    "bridge.security.access_tokens",
    "bridge.web.requests",
)
#: What the interface itself (networks/base.py, login.py, seen.py) builds on.
INTERFACE_MAY_IMPORT = ("bridge.core.media", "bridge.security.access_tokens",
                        "bridge.security.impersonation")
#: The shared network-level modules `core/` may use.
CORE_MAY_IMPORT_FROM_NETWORKS = ("bridge.networks.base", "bridge.networks.login",
                                 "bridge.networks.seen", "bridge.networks.history")
#: Files outside db/ still holding SQL. It may only shrink: a file leaves it when its SQL
#: moves into a named store method, and nothing joins it.
SQL_OUTSIDE_DB: tuple[str, ...] = ()
#: Pairs of modules still importing each other; may only shrink.
KNOWN_CIRCLES: tuple[frozenset[str], ...] = (
    frozenset({"bridge.networks.discord.connector", "bridge.networks.discord.events",
               "bridge.networks.discord.webhooks"}),
    frozenset({"bridge.networks.telegram.connector", "bridge.networks.telegram.events"}),
)

_SQL = re.compile(r"\b(SELECT\b[\s\S]+\bFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
                  r"CREATE\s+(UNIQUE\s+)?(TABLE|INDEX)|ALTER\s+TABLE|DROP\s+(TABLE|INDEX))\b")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(BRIDGE.rglob("*.py"))}


MODULES = sources()


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module) for every import in the file, type-checking ones included."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                # `from . import x` / `from .pkg import module` name a module themselves.
                full = f"{name}.{alias.name}"
                yield node.lineno, full if full in MODULES else name


def owning_module(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def within(name: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def network_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 3 and parts[:2] == ["bridge", "networks"] and \
            (BRIDGE / "networks" / parts[2]).is_dir():
        return parts[2]
    return None


def violations(rule) -> list[str]:
    found = []
    for module, path in MODULES.items():
        for line, imported in imports_of(path):
            if imported.startswith("bridge") and (why := rule(module, imported)):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {imported}: {why}")
    return found


def network_rule(module: str, imported: str) -> str | None:
    network = network_of(module)
    if network is not None:
        if network_of(imported) == network or within(imported, NETWORK_MAY_IMPORT):
            return None
        if network_of(imported):
            return "a network never imports another network"
        return "a network uses only its own package and " + ", ".join(NETWORK_MAY_IMPORT)
    if within(module, CORE_MAY_IMPORT_FROM_NETWORKS):
        if network_of(imported):
            return "the connector interface knows no network"
        if within(imported, "bridge.networks") or within(imported, INTERFACE_MAY_IMPORT):
            return None
        return "the connector interface builds only on " + ", ".join(INTERFACE_MAY_IMPORT)
    return None


def core_rule(module: str, imported: str) -> str | None:
    if within(module, "bridge.core") and within(imported, "bridge.networks") and \
            not within(imported, CORE_MAY_IMPORT_FROM_NETWORKS):
        return "core/ talks to networks only through " + ", ".join(
            CORE_MAY_IMPORT_FROM_NETWORKS)
    return None


def db_rule(module: str, imported: str) -> str | None:
    if within(module, "bridge.db") and not within(imported, ("bridge.db", "bridge.util")):
        return "db/ is below everything but util/"
    return None


#: What `bridge/config.py`, the ground floor, still imports from above it (inside the checks of
#: two keys' values). It may only shrink.
CONFIG_STILL_IMPORTS = ("bridge.core.media", "bridge.security.ratelimit")
#: The config file's reading (config.py) and its keys (config_keys.py): one floor in two files.
GROUND_FLOOR = ("bridge.config", "bridge.config_keys")


def layer_rule(module: str, imported: str) -> str | None:
    if within(module, "bridge.core") and within(imported, ("bridge.matrix", "bridge.bot")):
        return "core/ names what it needs from the Matrix side as a Protocol (core.matrix_side)"
    if within(module, "bridge.matrix") and within(imported, ("bridge.core", "bridge.bot")):
        return "matrix/ is the appservice, ghosts, portals and spaces: below core/ and bot/"
    if module in GROUND_FLOOR and not within(imported, ("bridge.schema", "bridge.util",
                                                        *GROUND_FLOOR)) \
            and imported not in CONFIG_STILL_IMPORTS:
        return "config.py is the ground floor: packages check their sections by a ConfigCheck"
    for one, other in (("bridge.identity", "bridge.security"),
                       ("bridge.security", "bridge.identity")):
        if within(module, one) and within(imported, other):
            return "identity/ and security/ never import each other (a Protocol instead)"
    return None


def test_the_layers_between_core_matrix_bot_config_identity_and_security():
    assert violations(layer_rule) == []
    used = {i for module in GROUND_FLOOR for _, i in imports_of(MODULES[module])}
    assert [i for i in CONFIG_STILL_IMPORTS if i not in used] == [], \
        "config.py no longer imports it: take it off CONFIG_STILL_IMPORTS"


def test_networks_import_neither_each_other_nor_the_core():
    assert violations(network_rule) == []


def test_core_never_imports_a_network():
    assert violations(core_rule) == []


def test_db_imports_nothing_above_it():
    assert violations(db_rule) == []


@pytest.mark.parametrize(("rule", "module", "imported"), [
    (network_rule, "bridge.networks.slack.events", "bridge.networks.xmpp.convert"),
    (network_rule, "bridge.networks.slack.events", "bridge.core.router"),
    (network_rule, "bridge.networks.xmpp.connector", "bridge.identity.accounts"),
    (network_rule, "bridge.networks.base", "bridge.networks.slack.connector"),
    (core_rule, "bridge.core.router", "bridge.networks.slack.connector"),
    (db_rule, "bridge.db.persona", "bridge.core.router"),
    (db_rule, "bridge.db.persona", "bridge.config"),
    (layer_rule, "bridge.core.router", "bridge.matrix.ghosts"),
    (layer_rule, "bridge.matrix.portals", "bridge.bot.bot"),
    (layer_rule, "bridge.config", "bridge.security.policy"),
    (layer_rule, "bridge.identity.accounts", "bridge.security.vault"),
    (layer_rule, "bridge.security.mfa", "bridge.identity.errors"),
])
def test_the_import_rules_see_a_broken_rule(rule, module, imported):
    assert rule(module, imported)


@pytest.mark.parametrize(("rule", "module", "imported"), [
    (network_rule, "bridge.networks.slack.events", "bridge.networks.slack.session"),
    (network_rule, "bridge.networks.slack.events", "bridge.networks.base"),
    (core_rule, "bridge.core.router", "bridge.networks.base"),
    (db_rule, "bridge.db.persona", "bridge.db.database"),
    (layer_rule, "bridge.bot.dispatch", "bridge.core.router"),
    (layer_rule, "bridge.core.router", "bridge.core.matrix_side"),
    (layer_rule, "bridge.security.config_checks", "bridge.config"),
])
def test_the_import_rules_let_the_layers_work(rule, module, imported):
    assert rule(module, imported) is None


def sql_in(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), str(path))
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and _SQL.search(node.value)]


def test_sql_lives_in_db():
    outside = {str(path.relative_to(ROOT)): lines for module, path in MODULES.items()
               if not within(module, "bridge.db") and (lines := sql_in(path))}
    unexpected = {f: lines for f, lines in outside.items() if f not in SQL_OUTSIDE_DB}
    assert unexpected == {}, "SQL outside db/: give the store a named method instead"
    clean = [f for f in SQL_OUTSIDE_DB if f not in outside]
    assert clean == [], "no SQL left there: take it off SQL_OUTSIDE_DB"


def test_the_sql_rule_sees_sql():
    # The rule above passes only because it can see SQL: it does here.
    assert sql_in(BRIDGE / "db" / "upgrade.py")
    assert not _SQL.search("Select the profile from the list, then update it")


def circles() -> list[frozenset[str]]:
    """Groups of modules that import each other (strongly connected, more than one)."""
    graph = {m: {o for _, i in imports_of(p) if (o := owning_module(i)) and o != m}
             for m, p in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(frozenset(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_two_modules_import_each_other():
    found = circles()
    new = [sorted(c) for c in found if c not in KNOWN_CIRCLES]
    assert new == [], "modules importing each other: give one a Protocol of what it needs"
    gone = [sorted(c) for c in KNOWN_CIRCLES if c not in found]
    assert gone == [], "a known circle is broken: take it off KNOWN_CIRCLES"
