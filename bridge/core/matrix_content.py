"""The Matrix side of a bridged message: its content from remote text, HTML or a file, and
the transaction id that makes a resend after a crash land once."""

from __future__ import annotations

import hashlib

from mautrix.appservice import IntentAPI
from mautrix.types import (
    FileInfo,
    Format,
    MediaMessageEventContent,
    MessageEventContent,
    MessageType,
    TextMessageEventContent,
)

from ..networks.base import Attachment, RemoteRoom


async def media_content(intent: IntentAPI, attachment: Attachment
                         ) -> MediaMessageEventContent:
    url = await intent.upload_media(attachment.data, mime_type=attachment.mimetype,
                                    filename=attachment.name, size=len(attachment.data))
    kind = MessageType.IMAGE if attachment.mimetype.startswith("image/") else MessageType.FILE
    return MediaMessageEventContent(
        msgtype=kind, body=attachment.name, url=url,
        info=FileInfo(mimetype=attachment.mimetype, size=len(attachment.data)))


def text_content(text: str, html: str | None) -> TextMessageEventContent:
    content = TextMessageEventContent(msgtype=MessageType.TEXT, body=text)
    if html:
        content.format = Format.HTML
        content.formatted_body = html
    return content


def txn_id(network: str, room: RemoteRoom, remote_id: str) -> str:
    """A transaction id fixed by the remote id: if a crash makes us send again, the homeserver
    recognises the retry and does not post the message twice."""
    digest = hashlib.sha256(f"{network}\0{room.remote_id}\0{remote_id}".encode()).hexdigest()
    return f"rf-{digest[:32]}"


def is_thread_fallback(content: MessageEventContent) -> bool:
    """In a thread, clients set a reply to the latest thread message only as a fallback for
    clients without threads; it is not a real reply."""
    relates = content.relates_to
    return bool(relates and relates.in_reply_to and getattr(relates, "is_falling_back", False))
