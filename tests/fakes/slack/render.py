"""Wire shapes: how Slack renders users, conversations, messages and files in API responses
and event payloads. `base` is the fake's own URL, so avatars and files are fetched from it."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

from .models import Channel, Message, SlackFile, Team, User

AVATAR_SIZES = (24, 32, 48, 72, 192, 512)
TEAM_ICON_SIZES = (34, 44, 68, 88, 102, 132, 230)


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real (decodable) one-colour PNG, so avatar downloads carry plausible image bytes."""
    row = b"\x00" + bytes(rgb) * width
    raw = zlib.compress(row * height)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw)
            + chunk(b"IEND", b""))


def encode_cursor(offset: int) -> str:
    # Slack cursors are opaque base64 strings; clients must pass them back unchanged.
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        kind, _, value = base64.b64decode(cursor).decode().partition(":")
        if kind == "offset":
            return int(value)
    except (ValueError, UnicodeDecodeError):
        pass
    raise ValueError("invalid_cursor")


def team_json(team: Team, base: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": team.id, "name": team.name, "domain": team.domain,
        "url": f"https://{team.domain}.slack.com/", "email_domain": "",
        "icon": {f"image_{size}": f"{base}/avatars/{team.id}/{size}.png"
                 for size in TEAM_ICON_SIZES} | {"image_default": True},
        "avatar_base_url": f"{base}/avatars/", "is_verified": False,
    }
    if team.enterprise is not None:
        body.update(enterprise_id=team.enterprise.id, enterprise_name=team.enterprise.name,
                    enterprise_domain=team.enterprise.domain)
    return body


def user_json(user: User, base: str) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "title": "", "phone": "", "skype": "", "real_name": user.real_name,
        "real_name_normalized": user.real_name, "display_name": user.display_name,
        "display_name_normalized": user.display_name, "fields": None,
        "status_text": user.status_text, "status_emoji": user.status_emoji,
        "status_expiration": 0, "avatar_hash": user.avatar_hash, "email": user.email,
        "first_name": user.real_name.split(" ")[0], "last_name":
            " ".join(user.real_name.split(" ")[1:]), "team": user.team.id,
    }
    for size in AVATAR_SIZES:
        profile[f"image_{size}"] = f"{base}/avatars/{user.id}/{size}.png?h={user.avatar_hash}"
    profile["image_original"] = f"{base}/avatars/{user.id}/original.png?h={user.avatar_hash}"
    profile["is_custom_image"] = True
    body: dict[str, Any] = {
        "id": user.id, "team_id": user.team.id, "name": user.name, "deleted": user.deleted,
        "color": "9f69e7", "real_name": user.real_name, "tz": user.tz, "tz_label": user.tz,
        "tz_offset": 0, "profile": profile, "is_admin": user.is_admin, "is_owner": False,
        "is_primary_owner": False, "is_restricted": False, "is_ultra_restricted": False,
        "is_bot": user.is_bot, "is_app_user": False, "updated": user.updated,
        "is_email_confirmed": True, "who_can_share_contact_card": "EVERYONE",
    }
    enterprise = user.team.enterprise
    if enterprise is not None:
        body["enterprise_user"] = {
            "id": user.id, "enterprise_id": enterprise.id, "enterprise_name": enterprise.name,
            "is_admin": user.is_admin, "is_owner": False, "is_primary_owner": False,
            "teams": [team.id for team in user.teams],
        }
    return body


def channel_json(channel: Channel, viewer: User | None, *, now: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": channel.id, "created": channel.created, "is_archived": channel.is_archived,
        "is_im": channel.kind == "im", "is_mpim": channel.kind == "mpim",
        "is_private": channel.kind != "public", "is_org_shared": False,
        "context_team_id": channel.team.id, "updated": now * 1000,
    }
    if channel.kind == "im":
        others = [m for m in channel.members if viewer is None or m != viewer.id]
        body.update(user=(others or channel.members)[0], is_user_deleted=False, priority=0)
        return body
    body.update(
        name=channel.name, name_normalized=channel.name,
        # Modern private channels are C-prefixed with is_channel true; group DMs are neither.
        is_channel=channel.kind in ("public", "private"), is_group=False,
        is_general=channel.is_general, is_shared=False, is_ext_shared=False,
        is_pending_ext_shared=False, unlinked=0, parent_conversation=None,
        creator=channel.creator, shared_team_ids=[channel.team.id], pending_shared=[],
        is_member=viewer is not None and viewer.id in channel.members,
        topic={"value": channel.topic, "creator": channel.creator if channel.topic else "",
               "last_set": channel.created if channel.topic else 0},
        purpose={"value": channel.purpose,
                 "creator": channel.creator if channel.purpose else "",
                 "last_set": channel.created if channel.purpose else 0},
        previous_names=[], num_members=len(channel.members),
    )
    return body


def file_json(file: SlackFile, base: str) -> dict[str, Any]:
    private = f"{base}/files-pri/{file.team.id}-{file.id}/{file.name}"
    body: dict[str, Any] = {
        "id": file.id, "created": file.created, "timestamp": file.created, "name": file.name,
        "title": file.title, "mimetype": file.mimetype, "filetype": file.filetype,
        "pretty_type": file.filetype.upper(), "user": file.user.id,
        "user_team": file.team.id, "editable": False, "size": file.length, "mode": "hosted",
        "is_external": False, "external_type": "", "is_public": False,
        "public_url_shared": False, "display_as_bot": False, "username": "",
        "url_private": private,
        "url_private_download": f"{base}/files-pri/{file.team.id}-{file.id}/download/{file.name}",
        "permalink": f"https://{file.team.domain}.slack.com/files/{file.user.id}/{file.id}/"
                     f"{file.name}",
        "permalink_public": f"https://slack-files.com/{file.team.id}-{file.id}-fake",
        "has_rich_preview": False, "file_access": "visible",
    }
    if file.mimetype.startswith("image/"):
        # Thumbnails live behind the same authentication as url_private.
        for size in (64, 80, 360, 480):
            body[f"thumb_{size}"] = private
    return body


def thread_fields(message: Message, channel: Channel) -> dict[str, Any]:
    """What a thread parent carries once it has replies."""
    replies = channel.replies(message.ts)
    if not replies:
        return {}
    users: list[str] = []
    for reply in replies:
        if reply.user not in users:
            users.append(reply.user)
    return {"thread_ts": message.ts, "reply_count": len(replies),
            "reply_users_count": len(users), "latest_reply": replies[-1].ts,
            "reply_users": users, "is_locked": False, "subscribed": False}


def message_json(message: Message, channel: Channel, base: str) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "message"}
    if message.subtype:
        body["subtype"] = message.subtype
    body.update(user=message.user, text=message.text, ts=message.ts, team=message.team_id)
    if message.client_msg_id:
        body["client_msg_id"] = message.client_msg_id
    if message.blocks is not None:
        body["blocks"] = message.blocks
    if message.files:
        body.update(files=[file_json(f, base) for f in message.files], upload=False,
                    display_as_bot=False)
    if message.edited:
        body["edited"] = dict(message.edited)
    if message.thread_ts:
        body["thread_ts"] = message.thread_ts
        if message.is_reply:
            parent = channel.find(message.thread_ts)
            body["parent_user_id"] = parent.user if parent else message.user
    body.update(thread_fields(message, channel))
    if message.reactions:
        body["reactions"] = [{"name": name, "users": list(users), "count": len(users)}
                             for name, users in message.reactions.items()]
    return body


def rich_text(text: str) -> list[dict[str, Any]]:
    """The rich_text block Slack clients attach to what people type."""
    return [{"type": "rich_text", "block_id": "fake" + str(abs(hash(text)) % 100000),
             "elements": [{"type": "rich_text_section",
                           "elements": [{"type": "text", "text": text}]}]}]
