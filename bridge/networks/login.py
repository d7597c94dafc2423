"""Neutral types for linking an account on a network, shared by every connector.

A login is a short conversation: the connector asks for fields (a password), shows a URL (an
OAuth page) or a QR code, and ends with a verified `LinkedAccount`. Flow state passed back and
forth is stored by the core and must hold nothing secret; secrets arrive only in `answers`.
"""

from __future__ import annotations

from typing import Any

import attrs


class LoginFailed(Exception):
    """The network refused the login; the message tells the person what to fix."""


@attrs.frozen
class Field:
    name: str
    label: str
    secret: bool = False


@attrs.frozen
class LoginStep:
    message: str
    state: dict[str, Any] = attrs.field(factory=dict)
    fields: list[Field] = attrs.field(factory=list)
    url: str | None = None
    # What a QR code encodes (a tg://login link): the bot posts it as an image, with the
    # text in its body, and redacts it once a new code replaces it or the flow moved on.
    qr: str | None = None


@attrs.frozen
class LinkedAccount:
    """Proof of ownership done: who the person is there, and what to keep in the vault."""

    external_user_id: str
    display_name: str | None
    scopes: list[str]
    credentials: dict[str, str] = attrs.field(repr=False)
    # What the verification ping checked, in words for the person.
    verified: list[str] = attrs.field(factory=list)
    # What may make the account high-risk under the admin's `policy.high_risk` (linking it then
    # needs a fresh MFA check): "enterprise_grid" for a Slack Enterprise Grid org,
    # "server:<id>" for each Discord server the account is in. The core decides, not the
    # connector, so the admin's policy stays in one place.
    risk_markers: list[str] = attrs.field(factory=list)
    # A short fingerprint of the account's picture on the network (the persona descriptor's
    # avatar_hash), when the network has one.
    avatar_hash: str | None = None
