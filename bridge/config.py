"""The bridge's config file: schema, defaults, environment overrides and validation.

The file is read and written with ruamel.yaml in round-trip mode, so comments an admin wrote
survive when the bridge writes generated tokens back into it. What the bridge *uses* is a
separate, validated view: defaults, then the file, then environment variables. Environment
overrides are never written back to the file (they often carry secrets).
"""

from __future__ import annotations

import copy
import difflib
import io
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mautrix.util.config import BaseFileConfig
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

from .config_keys import (
    _MXID,
    _SERVER_NAME,
    PERMISSION_LEVELS,
    SCHEMA,
    _is_mapping,
    _is_nonempty_str,
    _network_keys,
)
from .schema import (  # noqa: F401 - Key, NetworkInfo and RiskRule are used by networks
    Key,
    NetworkInfo,
    RiskRule,
    installed_networks,
    known_networks,
)
from .util.files import write_private

ENV_PREFIX = "RELAYFORGE_"


class ConfigError(Exception):
    """The config cannot be used. Every problem names the key and what was expected."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} has {len(problems)} problem(s):\n{lines}")


def _check_enabled_networks(effective: Any, networks: Mapping[str, NetworkInfo]) -> list[str]:
    """Each enabled network's own checks of keys needed together (its app's credentials)."""
    problems = []
    for name, info in networks.items():
        section = get_path(effective, f"networks.{name}", None)
        if (info.check_enabled is not None and isinstance(section, Mapping)
                and section.get("enabled") is True):
            problems += info.check_enabled(section)
    return problems


_MISSING = object()


def get_path(data: Any, path: str, default: Any = _MISSING) -> Any:
    """Look up a dotted path; anything that is not a mapping on the way means "not there"."""
    node = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def set_path(data: CommentedMap, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), Mapping):
            node[part] = CommentedMap()
        node = node[part]
    node[last] = value


class Config(BaseFileConfig):
    """The config file (round-trip) plus the validated, effective values the bridge runs on."""

    def __init__(self, path: str, environ: Mapping[str, str] | None = None,
                 networks: Mapping[str, NetworkInfo] | None = None) -> None:
        super().__init__(path, base_path="")
        self.environ = dict(os.environ if environ is None else environ)
        self.effective: CommentedMap = CommentedMap()
        #: The installed networks: each brings its own `networks.<name>` keys and checks.
        self.networks = dict(installed_networks() if networks is None else networks)

    # BaseFileConfig hooks; this config never merges itself into a base file.
    def load_base(self) -> None:
        return None

    def do_update(self, helper: Any) -> None:  # pragma: no cover - never called
        raise NotImplementedError

    def load(self) -> None:
        try:
            with open(self.path) as stream:
                text = stream.read()
            # Keep the admin's quoting and indentation when -g writes tokens back.
            self._yaml = _round_trip_yaml(*_guess_indent(text))
            self._data = self._yaml.load(text)
        except FileNotFoundError as e:
            raise ConfigError(
                [f"file not found; copy config.example.yaml to {self.path} and edit it"],
                self.path,
            ) from e
        except YAMLError as e:
            raise ConfigError([f"is not valid YAML: {e}"], self.path) from e
        if self._data is None:
            self._data = CommentedMap()
        if not isinstance(self._data, Mapping):
            raise ConfigError(["the top level must be a mapping of sections"], self.path)

    @property
    def network_names(self) -> list[str]:
        configured = self._data.get("networks") or {}
        names = list(self.networks)
        if isinstance(configured, Mapping):
            names += [n for n in configured if n not in names]
        return names

    def schema(self) -> Iterable[Key]:
        yield from SCHEMA
        for name in self.network_names:
            yield from _network_keys(name, self.networks.get(name))

    def validate(self, *, for_run: bool = True, checks: Iterable[ConfigCheck] = ()) -> None:
        """Build the effective values and raise ConfigError naming every bad or missing key.

        `checks` are the packages' own checks of their sections (the policy, sign-in
        providers; see `bridge.configure`), run on the effective values: this module is the
        ground floor and imports none of them."""
        problems: list[str] = []
        effective = copy.deepcopy(self._data)
        problems += self._apply_env(effective)
        sections = {key.path.split(".")[0] for key in self.schema() if "." in key.path}
        for section in sorted(sections):
            value = effective.get(section)
            if value is not None and not isinstance(value, Mapping):
                problems.append(f"{section}: got {value!r}; expected a mapping of keys")
        for key in self.schema():
            if key.needed_to_run_only and not for_run:
                continue
            value = get_path(effective, key.path)
            if value is _MISSING or value is None:
                if key.required or key.needed_to_run_only:
                    problems.append(f"{key.path}: missing; expected {key.expect}")
                elif key.default is not None:
                    set_path(effective, key.path, copy.deepcopy(key.default))
                continue
            if not key.check(value):
                problems.append(f"{key.path}: got {value!r}; expected {key.expect}")
        problems += _unknown_keys(self._data, [key.path for key in self.schema()])
        problems += _check_pkcs11(effective)
        problems += _check_enabled_networks(effective, self.networks)
        for check in checks:
            problems += check(effective, self.networks)
        permissions = get_path(effective, "bridge.permissions", None)
        if _is_mapping(permissions):
            problems += _check_permissions(permissions)
        if problems:
            raise ConfigError(problems, self.path)
        self.effective = effective

    def _apply_env(self, target: CommentedMap) -> list[str]:
        """RELAYFORGE_SECTION__KEY=value overrides section.key; values are parsed as YAML."""
        problems = []
        yaml = YAML(typ="safe")
        for name, raw in sorted(self.environ.items()):
            if not name.startswith(ENV_PREFIX):
                continue
            path = ".".join(p.lower() for p in name[len(ENV_PREFIX):].split("__"))
            if not path or "" in path.split("."):
                continue
            try:
                value = yaml.load(raw) if raw.strip() else ""
            except YAMLError:
                problems.append(f"{path} (from ${name}): not a valid YAML value")
                continue
            set_path(target, path, value)
        return problems

    def __getitem__(self, key: str) -> Any:
        value = get_path(self.effective, key)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = get_path(self.effective, key)
        return default if value is _MISSING else value

    def file_value(self, key: str) -> Any:
        """What the file itself says at `key` (no defaults, no env overrides); None if
        nothing."""
        return get_path(self._data, key, None)

    # Writing back: only the file's own document, never env overrides or defaults.
    def set_in_file(self, key: str, value: Any) -> None:
        set_path(self._data, key, value)
        set_path(self.effective, key, value)

    def save(self) -> None:
        # The file now holds the appservice tokens: private to its owner, written atomically.
        text = io.StringIO()
        (getattr(self, "_yaml", None) or _round_trip_yaml(4, 6, 4)).dump(self._data, text)
        write_private(self.path, text.getvalue())


def _guess_indent(text: str) -> tuple[int, int, int]:
    """(mapping indent, sequence indent, dash offset) as the file uses them."""
    mapping = next((len(line) - len(line.lstrip(" ")) for line in text.splitlines()
                    if line.startswith(" ") and not line.lstrip().startswith(("#", "-"))
                    and ":" in line), 4)
    _, sequence, offset = load_yaml_guess_indent(text)
    if sequence is None or offset is None:
        return mapping, mapping + 2, mapping
    return mapping, sequence, offset


def _represent_null(representer: Any, _: None) -> Any:
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")


def _round_trip_yaml(mapping: int, sequence: int, offset: int) -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 200
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    # An admin's `null` stays `null` instead of becoming an empty value.
    yaml.representer.add_representer(type(None), _represent_null)
    return yaml


#: Parts of the config whose inside is checked by their own code, not by SCHEMA.
_FREE_FORM = ("logging", "policy", "identity.providers", "bridge.permissions", "vault.pkcs11",
              "security.anomaly.geoip_database")


def _unknown_keys(data: Any, known: list[str]) -> list[str]:
    """Keys in the file that the bridge does not read (a typo such as `adress`), each named
    with the closest key it does read."""
    sections = {".".join(k.split(".")[:i]) for k in known for i in range(1, k.count(".") + 1)}
    problems = []

    def walk(node: Any, prefix: str) -> None:
        if not isinstance(node, Mapping):
            return
        for name in node:
            path = f"{prefix}{name}"
            if path in _FREE_FORM or (path in known and path not in sections):
                continue
            if path in sections:
                walk(node[name], f"{path}.")
                continue
            close = difflib.get_close_matches(path, known + sorted(sections), n=1, cutoff=0.7)
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(f"{path}: not a key RelayForge knows{hint}")

    walk(data, "")
    return problems


def _check_permissions(permissions: Mapping[str, Any]) -> list[str]:
    problems = []
    for who, level in permissions.items():
        where = f"bridge.permissions[{who!r}]"
        if not isinstance(who, str) or not (
            who == "*" or _MXID.match(who) or _SERVER_NAME.match(who)
        ):
            problems.append(f"{where}: expected \"*\", a server name or a user ID as the key")
        elif level not in PERMISSION_LEVELS:
            problems.append(f"{where}: got {level!r}; expected one of relay, user, admin")
    return problems


_PKCS11_KEYS = {
    "module": "the path of the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so",
    "token_label": "the label of the HSM token",
    "key_label": "the label prefix of the master keys, e.g. relayforge-master",
}


def _check_pkcs11(effective: Mapping[str, Any]) -> list[str]:
    settings = get_path(effective, "vault.pkcs11", None)
    problems = []
    if isinstance(settings, Mapping) and "pin" in settings:
        problems.append("vault.pkcs11.pin: the PIN must not be in the config; use pin_env (an "
                        "environment variable name) or pin_file")
    if get_path(effective, "vault.provider", None) != "pkcs11":
        return problems
    if not isinstance(settings, Mapping):
        settings = {}
    for key, expect in _PKCS11_KEYS.items():
        if not _is_nonempty_str(settings.get(key)):
            problems.append(f"vault.pkcs11.{key}: missing; expected {expect}")
    return problems


# A package's check of its own config section: (effective values, installed networks) ->
# problems, each naming its key.
ConfigCheck = Callable[[Mapping[str, Any], Mapping[str, NetworkInfo]], list[str]]
