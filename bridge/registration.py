"""The appservice registration file the homeserver loads (`-g`)."""

from __future__ import annotations

import io
import re
import secrets
from typing import Any

from ruamel.yaml import YAML

from .config import Config
from .networks.matrix.info import AS_TOKEN_PREFIX
from .networks.matrix.info import INFO as MATRIX_INFO
from .util.files import write_private


def ghost_namespace_regex(template: str, domain: str) -> str:
    """Regex matching every MXID a ghost template can produce, e.g. `@slack_.*:example.org`."""
    before, after = template.split("{id}")
    return f"@{re.escape(before)}.+{re.escape(after)}:{re.escape(domain)}"


def build_registration(config: Config, as_token: str, hs_token: str) -> dict[str, Any]:
    domain = config["homeserver.domain"]
    bot = config["appservice.bot_username"]
    users = [{"regex": f"@{re.escape(bot)}:{re.escape(domain)}", "exclusive": True}]
    # A Matrix persona is a real Matrix user: no ghost namespace for it.
    for network in (n for n in config.network_names if n != MATRIX_INFO.name):
        template = config[f"networks.{network}.username_template"]
        users.append({"regex": ghost_namespace_regex(template, domain), "exclusive": True})
    return {
        "id": config["appservice.id"],
        "url": config["appservice.address"],
        "as_token": as_token,
        "hs_token": hs_token,
        "sender_localpart": bot,
        "namespaces": {"users": users, "aliases": [], "rooms": []},
        "rate_limited": False,
        "receive_ephemeral": True,
        "de.sorunome.msc2409.push_ephemeral": True,
        # End-to-bridge encryption (bridge.encryption): the bot's device gets its to-device
        # messages, device-list changes and one-time-key counts in the transactions (MSC3202,
        # needs HOMESERVER_SETTINGS), and is made with the appservice token (MSC4190), so the
        # bot never logs in or syncs and can stay the sender user.
        "org.matrix.msc3202": True,
        "io.element.msc4190": True,
    }


#: What the homeserver (Synapse) needs for the bridge's encryption; `-g` prints it.
HOMESERVER_SETTINGS = """\
For encrypted rooms (bridge.encryption), put this in the homeserver's config (Synapse):
  experimental_features:
    msc2409_to_device_messages_enabled: true
    msc3202_transaction_extensions: true"""


def generate_registration(config: Config, registration_path: str) -> dict[str, Any]:
    """Make fresh tokens, write them into the config file and write the registration file."""
    as_token = secrets.token_urlsafe(48)
    hs_token = secrets.token_urlsafe(48)
    registration = build_registration(config, as_token, hs_token)
    config.set_in_file("appservice.as_token", as_token)
    config.set_in_file("appservice.hs_token", hs_token)
    config.save()
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    text = io.StringIO()
    yaml.dump(registration, text)
    write_private(registration_path, text.getvalue())
    return registration


def build_double_puppet_registration(config: Config, as_token: str) -> dict[str, Any]:
    """The second registration double puppeting needs (the appservice-token method): its
    own tokens, no URL (the homeserver never sends it anything), a non-exclusive namespace
    for every user of the server (the bridge acts only for people who linked), not rate
    limited (the bridge sends what people already sent elsewhere)."""
    domain = config["homeserver.domain"]
    return {
        "id": f"{config['appservice.id']}-double-puppet",
        "url": None,
        "as_token": as_token,
        "hs_token": secrets.token_urlsafe(48),
        "sender_localpart": f"{config['appservice.bot_username']}-doublepuppet-"
                            f"{secrets.token_hex(4)}",
        "namespaces": {"users": [{"regex": f"@.*:{re.escape(domain)}", "exclusive": False}],
                       "aliases": [], "rooms": []},
        "rate_limited": False,
    }


def double_puppet_path(registration_path: str) -> str:
    """Where -g writes the second registration: beside the first."""
    stem, dot, ext = registration_path.rpartition(".")
    return f"{stem}-double-puppet.{ext}" if dot and "/" not in ext else \
        f"{registration_path}-double-puppet.yaml"


def generate_double_puppet_registration(config: Config, path: str) -> dict[str, Any]:
    """Write the second registration and put its secret into the config's
    `double_puppet.secrets` for the bridge's own homeserver (the admin's other servers,
    comments and formatting stay as they were)."""
    as_token = secrets.token_urlsafe(48)
    registration = build_double_puppet_registration(config, as_token)
    file_secrets = config.file_value("double_puppet.secrets")
    if not isinstance(file_secrets, dict):
        file_secrets = {}
    # The server name has dots: set it as a key of the mapping, not as a dotted path.
    file_secrets[config["homeserver.domain"]] = AS_TOKEN_PREFIX + as_token
    config.set_in_file("double_puppet.secrets", file_secrets)
    config.save()
    _write_yaml(path, registration)
    return registration


def _write_yaml(path: str, data: dict[str, Any]) -> None:
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    # `url: null`, spelled out: the homeserver reads an empty value the same, people do not.
    yaml.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    text = io.StringIO()
    yaml.dump(data, text)
    write_private(path, text.getvalue())
