"""A Matrix user's picture as a URL another network can fetch without Matrix credentials."""

from __future__ import annotations

from urllib.parse import quote

from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixError
from mautrix.types import UserID


def public_media_base(address: str, public_url: str | None) -> str | None:
    """Where other networks may fetch the homeserver's media: its declared public URL, else
    its address when that is https. A plain-http address is an internal or local one the
    bridge must not hand out."""
    if public_url:
        return public_url.rstrip("/")
    return address.rstrip("/") if address.startswith("https://") else None


async def public_avatar(intent: IntentAPI, base: str | None, sender: str) -> str | None:
    """The public download URL of `sender`'s avatar, or None without one (or no base)."""
    if base is None:
        return None
    try:
        mxc = await intent.get_avatar_url(UserID(sender)) or ""
    except MatrixError:
        return None
    server, _, media_id = mxc.removeprefix("mxc://").partition("/")
    if not mxc.startswith("mxc://") or not server or not media_id:
        return None
    return f"{base}/_matrix/media/v3/download/{quote(server, safe='')}/{quote(media_id, safe='')}"
