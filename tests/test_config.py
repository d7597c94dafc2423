"""Config loading: defaults, validation that names the key, env overrides, round-trip saving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bridge.config import Config, ConfigError, get_path
from bridge.configure import load_config
from bridge.registration import generate_registration
from bridge.schema import Key, NetworkInfo, RiskRule
from bridge.security.policy import Policy, check_policy

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = """\
homeserver:
    address: https://matrix.example.org
    domain: example.org
appservice:
    address: http://localhost:29340
    as_token: a-token
    hs_token: h-token
bridge:
    permissions:
        "*": relay
        example.org: user
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def problems_of(tmp_path: Path, text: str, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={}, **kwargs)
    return info.value.problems


def test_minimal_config_gets_documented_defaults(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), environ={})
    assert config["database.uri"] == "sqlite:relayforge.db"
    assert config["bridge.command_prefix"] == "!rf"
    assert config["appservice.port"] == 29340
    assert config["networks.slack.username_template"] == "slack_{id}"
    assert config["networks.xmpp.enabled"] is False


def test_example_config_is_valid_and_documents_every_key(tmp_path):
    text = (ROOT / "config.example.yaml").read_text()
    # Only the generated tokens are missing from the example.
    problems = problems_of(tmp_path, text)
    assert all(p.startswith(("appservice.as_token", "appservice.hs_token")) for p in problems)
    config = load_config(write(tmp_path, text), for_run=False, environ={})
    example = YAML(typ="safe").load(text)

    missing = object()
    undocumented = [key.path for key in config.schema()
                    if get_path(example, key.path, missing) is missing]
    assert undocumented == []


def test_missing_required_key_is_named(tmp_path):
    problems = problems_of(tmp_path, MINIMAL.replace("    domain: example.org\n", ""))
    assert problems == ["homeserver.domain: missing; expected the server name in user IDs, "
                        "e.g. example.org"]


@pytest.mark.parametrize(("old", "new", "key"), [
    ("    address: https://matrix.example.org", "    address: matrix.example.org",
     "homeserver.address"),
    ("    as_token: a-token", "    as_token: a-token\n    port: eighty", "appservice.port"),
    ("        example.org: user", "        example.org: superuser",
     "bridge.permissions['example.org']"),
    ("bridge:\n", "database:\n    uri: mysql://x\nbridge:\n", "database.uri"),
    ("bridge:\n", "networks:\n    slack:\n        username_template: slack\nbridge:\n",
     "networks.slack.username_template"),
])
def test_wrong_value_is_named_with_what_was_expected(tmp_path, old, new, key):
    problems = problems_of(tmp_path, MINIMAL.replace(old, new))
    assert len(problems) == 1
    assert problems[0].startswith(f"{key}: ")
    assert "expected" in problems[0]


def test_section_of_wrong_type(tmp_path):
    problems = problems_of(tmp_path, MINIMAL + "database: sqlite:x.db\n")
    assert problems[0] == "database: got 'sqlite:x.db'; expected a mapping of keys"


def test_placeholder_tokens_mean_registration_was_not_generated(tmp_path):
    text = MINIMAL.replace("a-token", '"This value is generated when generating the registration"')
    problems = problems_of(tmp_path, text)
    assert problems[0].startswith("appservice.as_token: got")
    assert "run with -g" in problems[0]


def test_environment_overrides_keys_but_is_never_saved(tmp_path):
    path = write(tmp_path, MINIMAL)
    config = load_config(path, environ={"RELAYFORGE_DATABASE__URI": "postgres://db/relay",
                                        "RELAYFORGE_APPSERVICE__PORT": "29999"})
    assert config["database.uri"] == "postgres://db/relay"
    assert config["appservice.port"] == 29999
    config.save()
    assert "postgres" not in Path(path).read_text()


def test_bad_environment_override_is_named(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL), environ={"RELAYFORGE_APPSERVICE__PORT": "x"})
    assert info.value.problems == ["appservice.port: got 'x'; expected a TCP port number "
                                   "(1-65535)"]


def test_generate_keeps_comments_and_writes_tokens(tmp_path):
    text = "# my own note\n" + MINIMAL.replace("a-token", "old").replace("h-token", "old")
    path = write(tmp_path, text)
    registration = generate_registration(load_config(path, for_run=False, environ={}),
                                         str(tmp_path / "registration.yaml"))
    saved = Path(path).read_text()
    assert saved.startswith("# my own note\n")
    assert registration["as_token"] in saved and registration["hs_token"] in saved
    assert registration["as_token"] != registration["hs_token"]
    assert os.stat(path).st_mode & 0o077 == 0  # the tokens are secrets
    assert os.stat(tmp_path / "registration.yaml").st_mode & 0o077 == 0


def test_registration_namespaces(tmp_path):
    path = write(tmp_path, MINIMAL)
    reg_path = tmp_path / "registration.yaml"
    generate_registration(load_config(path, for_run=False, environ={}), str(reg_path))
    registration = YAML(typ="safe").load(reg_path.read_text())
    assert registration["sender_localpart"] == "relayforgebot"
    assert registration["rate_limited"] is False
    assert registration["receive_ephemeral"] is True
    regexes = [ns["regex"] for ns in registration["namespaces"]["users"]]
    # The bot, then the installed networks by name.
    assert regexes == [r"@relayforgebot:example\.org", r"@discord_.+:example\.org",
                       r"@slack_.+:example\.org", r"@telegram_.+:example\.org",
                       r"@xmpp_.+:example\.org"]
    assert all(ns["exclusive"] for ns in registration["namespaces"]["users"])


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)


def test_cli_refuses_to_start_and_names_the_key(tmp_path):
    path = write(tmp_path, MINIMAL.replace("    address: http://localhost:29340\n",
                                           "    address: 12\n"))
    result = run_cli("-c", path)
    assert result.returncode == 2
    assert "appservice.address: got 12; expected the URL the homeserver uses" in result.stderr


def test_cli_help_explains_run_and_generate():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "-g" in result.stdout and "registration" in result.stdout
    assert "python -m bridge -c config.yaml" in result.stdout


def test_enabled_network_without_connector_stops_start_up(tmp_path):
    path = write(tmp_path, MINIMAL + "networks:\n    myspace:\n        enabled: true\n")
    result = run_cli("-c", path)
    assert result.returncode == 2
    assert "networks.myspace.enabled: the myspace connector is not available" in result.stderr


def test_enabled_slack_needs_its_app_credentials(tmp_path):
    problems = problems_of(tmp_path, MINIMAL + "networks:\n    slack:\n        enabled: true\n"
                                               "        client_id: '1.2'\n")
    assert problems == [
        "networks.slack.client_secret: required when Slack is enabled (see the README's "
        "Slack section)",
        "networks.slack.app_token: required when Slack is enabled (see the README's Slack "
        "section)"]


def test_policy_with_an_unknown_action_is_named(tmp_path):
    problems = problems_of(tmp_path, MINIMAL + "policy:\n    allowed_actions:\n"
                                               "        xmpp: [send, shout]\n")
    assert problems == ["policy.allowed_actions.xmpp: unknown shout; expected some of send, "
                        "edit, delete, react, typing, read"]


def test_generate_changes_only_the_tokens(tmp_path):
    # An admin's quoting, nulls, two-space indentation and sequences survive -g untouched.
    original = (
        "# ours\n"
        "homeserver:\n"
        "  address: 'http://127.0.0.1:8008'   # single-quoted\n"
        '  domain: "example.org"\n'
        "appservice:\n"
        '  address: "http://127.0.0.1:29340"\n'
        "  as_token: null\n"
        "  hs_token: ~\n"
        "  bot_displayname: null\n"
        "bridge:\n"
        "  permissions:\n"
        "    '*': relay\n"
        '    "example.org": admin\n'
        "identity:\n"
        "  default_profiles:\n"
        "    - Jobb\n"
        '    - "Privat"\n'
    )
    path = tmp_path / "config.yaml"
    path.write_text(original)
    generate_registration(load_config(str(path), for_run=False, environ={}),
                          str(tmp_path / "registration.yaml"))
    written = path.read_text().splitlines()
    expected = original.splitlines()
    assert len(written) == len(expected)
    changed = [(old, new) for old, new in zip(expected, written, strict=True) if old != new]
    assert [old for old, _ in changed] == ["  as_token: null", "  hs_token: ~"]
    assert all(new.startswith(("  as_token: ", "  hs_token: ")) for _, new in changed)
    assert path.stat().st_mode & 0o777 == 0o600


def test_unknown_keys_are_named_with_the_closest_known_key(tmp_path):
    text = MINIMAL.replace("    address: https://matrix.example.org\n",
                           "    adress: https://matrix.example.org\n    address: https://m.org\n")
    text += ("netwroks:\n    xmpp:\n        enabled: true\n"
             "networks:\n    slack:\n        api_ur: https://slack.com/api/\n"
             "vault:\n    pkcs11:\n        pin_env: HSM_PIN\n"
             "logging:\n    version: 1\n    anything: goes\n")
    assert problems_of(tmp_path, text) == [
        "homeserver.adress: not a key RelayForge knows; did you mean homeserver.address?",
        "netwroks: not a key RelayForge knows; did you mean networks?",
        "networks.slack.api_ur: not a key RelayForge knows; did you mean "
        "networks.slack.api_url?",
    ]
    # Environment variables are not the file: other RELAYFORGE_ variables are no typo.
    load_config(write(tmp_path, MINIMAL), environ={"RELAYFORGE_HSM_PIN": "1234"})


# ---- networks bring their own config: one package, one entry point --------------------------

def _flattened(section: dict, prefix: str = "") -> dict:
    """A nested section as dotted keys (backfill: {initial_messages: ...} as one key)."""
    flat: dict = {}
    for key, value in section.items():
        if isinstance(value, dict) and value:
            flat.update(_flattened(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_each_network_section_of_the_example_is_its_package_schema():
    """config.example.yaml documents each installed network with exactly the keys its
    package declares, each with the package's default, so the two cannot drift apart."""
    example = YAML(typ="safe").load((ROOT / "config.example.yaml").read_text())["networks"]
    config = Config("unused.yaml", environ={})
    assert set(config.networks) <= set(example), "a network without an example section"
    for name in config.networks:
        keys = {key.path.removeprefix(f"networks.{name}."): key.default
                for key in config.schema() if key.path.startswith(f"networks.{name}.")}
        section = _flattened(example[name])
        assert sorted(section) == sorted(keys), f"networks.{name} in the example"
        different = {k: v for k, v in section.items() if k != "enabled" and v != keys[k]}
        assert different == {}, f"networks.{name}: example values that are not the defaults"


def myspace_info(**changes) -> NetworkInfo:
    def needs_pair(section):
        return ([] if section.get("key") and section.get("secret") else
                ["networks.myspace.secret: required with networks.myspace.key"])

    return NetworkInfo(**{
        "name": "myspace", "label": "MySpace",
        "settings": (Key("networks.myspace.key", lambda v: v is None or isinstance(v, str),
                         "the app's key"),
                     Key("networks.myspace.secret", lambda v: v is None or isinstance(v, str),
                         "the app's secret"),
                     Key("networks.myspace.pace", lambda v: isinstance(v, int), "a number",
                         default=3)),
        "check_enabled": needs_pair,
        "risk_rules": (RiskRule("myspace_top_friends", "friend:", "Tom is {value}",
                                values="friend ids"),),
        **changes})


def test_a_network_package_brings_its_keys_label_checks_and_namespace(tmp_path):
    path = write(tmp_path, MINIMAL + "networks:\n    myspace:\n        key: k\n"
                                     "        secret: s\n")
    config = Config(path, environ={}, networks={"myspace": myspace_info()})
    config.load()
    config.validate()
    assert config["networks.myspace.pace"] == 3
    assert config["networks.myspace.displayname_template"] == "{displayname} (MySpace)"
    assert config.network_names == ["myspace"]
    registration = generate_registration(config, str(tmp_path / "registration.yaml"))
    assert [ns["regex"] for ns in registration["namespaces"]["users"]][1:] == [
        r"@myspace_.+:example\.org"]

    path = write(tmp_path, MINIMAL + "networks:\n    myspace:\n        enabled: true\n"
                                     "        pace: fast\n        key: k\n")
    config = Config(path, environ={}, networks={"myspace": myspace_info()})
    config.load()
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert info.value.problems == ["networks.myspace.pace: got 'fast'; expected a number",
                                   "networks.myspace.secret: required with networks.myspace.key"]


def test_a_network_package_brings_its_high_risk_rule():
    networks = {"myspace": myspace_info()}
    policy = Policy({"high_risk": {"myspace_top_friends": ["tom", 7]}}, networks)
    assert policy.high_risk_reason("myspace", ["friend:anne", "friend:tom"]) == "Tom is tom"
    assert policy.high_risk_reason("myspace", ["friend:anne"]) is None
    assert check_policy({"high_risk": {"myspace_top_friends": "tom", "slack_enterprise_grid":
                                       True}}, networks) == [
        "policy.high_risk.myspace_top_friends: got 'tom'; expected a list of friend ids",
        "policy.high_risk.slack_enterprise_grid: unknown key; expected networks or "
        "myspace_top_friends"]


def test_installed_networks_are_found_without_importing_their_sdks(tmp_path):
    # A fresh interpreter: only an enabled network's connector is imported, and not even its
    # SDK until someone links (tests/test_lazy_imports.py follows a running bridge).
    path = write(tmp_path, MINIMAL + "networks:\n    xmpp:\n        enabled: true\n")
    script = (
        "import json, sys\n"
        "from bridge.app import Bridge\n"
        "from bridge.configure import load_config\n"
        f"config = load_config({path!r}, environ={{}})\n"
        "bridge = Bridge(config)\n"
        "bridge._load_enabled_connectors()\n"
        "print(json.dumps(sorted(bridge.connectors)))\n"
        "sdks = ('slack_sdk', 'discord', 'telethon', 'slixmpp')\n"
        "print(json.dumps([sorted(config.networks), [m for m in sdks if m in sys.modules]]))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    loaded, (networks, imported) = map(json.loads, result.stdout.splitlines())
    assert loaded == ["xmpp"]
    assert {"slack", "xmpp"} <= set(networks)
    assert imported == []
