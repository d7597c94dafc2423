"""What the bridge knows of Slack without importing slack-sdk: its label, its `networks.slack`
schema, the keys an enabled Slack needs together, and its `policy.high_risk` rule.
Registered under the `relayforge.network_info` entry-point group (pyproject.toml)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ...schema import Key, NetworkInfo, RiskRule

LABEL = "Slack"


def _optional_str(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() != "")


def _http_url(value: Any) -> bool:
    return isinstance(value, str) and re.match(r"^https?://[^\s/]+", value) is not None


def _seconds(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 60


SETTINGS: tuple[Key, ...] = (
    Key("networks.slack.client_id", _optional_str, "the Slack app's client ID"),
    Key("networks.slack.client_secret", _optional_str, "the Slack app's client secret"),
    Key("networks.slack.app_token", lambda v: v is None or (
        isinstance(v, str) and v.startswith("xapp-")),
        "an app-level token (xapp-...) with connections:write, for Socket Mode"),
    Key("networks.slack.signing_secret", _optional_str,
        "the Slack app's signing secret, for the Events API"),
    Key("networks.slack.inbound", lambda v: v in ("socket_mode", "events_api"),
        "socket_mode or events_api", default="socket_mode"),
    Key("networks.slack.api_url", _http_url, "Slack's Web API URL",
        default="https://slack.com/api/"),
    Key("networks.slack.oauth_url", _http_url, "Slack's OAuth authorisation page",
        default="https://slack.com/oauth/v2/authorize"),
    Key("networks.slack.token_rotation", lambda v: isinstance(v, bool),
        "true or false (the app has token rotation turned on)", default=False),
    Key("networks.slack.min_send_interval_seconds", _seconds,
        "seconds between sends into one channel (Slack allows about one per second)",
        default=1.0),
)


def needs_app_credentials(slack: Mapping[str, Any]) -> list[str]:
    """An enabled Slack needs its app's credentials, and the secret of the inbound it uses."""
    needed = ["client_id", "client_secret"]
    needed.append("signing_secret" if slack.get("inbound") == "events_api" else "app_token")
    return [f"networks.slack.{key}: required when Slack is enabled (see the README's Slack "
            "section)" for key in needed if not slack.get(key)]


INFO = NetworkInfo(
    name="slack", label=LABEL, settings=SETTINGS, check_enabled=needs_app_credentials,
    # The connector sets the marker when the workspace is part of an Enterprise Grid org.
    risk_rules=(RiskRule("slack_enterprise_grid", "enterprise_grid",
                         "it belongs to a Slack Enterprise Grid organisation"),),
)
