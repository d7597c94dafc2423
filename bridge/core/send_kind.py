"""What a Matrix event asks of the network, decided once for the router and the queue."""

from __future__ import annotations

from enum import StrEnum

from mautrix.types import Event, MediaMessageEventContent, ReactionEvent, RedactionEvent


class SendKind(StrEnum):
    """What a Matrix event asks of the network, decided once (`send_kind`): the metrics name
    it by its value, what people are told by its `words`."""

    MESSAGE = "message"
    EDIT = "edit"
    REACTION = "reaction"
    REDACTION = "redaction"

    @property
    def words(self) -> str:
        return "deletion" if self is SendKind.REDACTION else self.value


def send_kind(evt: Event) -> SendKind:
    if isinstance(evt, ReactionEvent):
        return SendKind.REACTION
    if isinstance(evt, RedactionEvent):
        return SendKind.REDACTION
    content = getattr(evt, "content", None)
    # A file that says it replaces a message goes out as a new one: networks edit text only.
    if content is not None and content.get_edit() and not (
            isinstance(content, MediaMessageEventContent) and content.url):
        return SendKind.EDIT
    return SendKind.MESSAGE
