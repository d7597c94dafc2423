"""The appservice registration file the homeserver loads (`-g`)."""

from __future__ import annotations

import io
import re
import secrets
from typing import Any

from ruamel.yaml import YAML

from .config import Config
from .util.files import write_private


def ghost_namespace_regex(template: str, domain: str) -> str:
    """Regex matching every MXID a ghost template can produce, e.g. `@slack_.*:example.org`."""
    before, after = template.split("{id}")
    return f"@{re.escape(before)}.+{re.escape(after)}:{re.escape(domain)}"


def build_registration(config: Config, as_token: str, hs_token: str) -> dict[str, Any]:
    domain = config["homeserver.domain"]
    bot = config["appservice.bot_username"]
    users = [{"regex": f"@{re.escape(bot)}:{re.escape(domain)}", "exclusive": True}]
    for network in config.network_names:
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
    }


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
