"""One linked person's Slack account, as the connector and the event translation share it."""

from __future__ import annotations


class SlackSession:
    def __init__(self, persona_id: str, team: str, user: str, owner: str,
                 credentials: dict[str, str]) -> None:
        self.persona_id = persona_id
        self.team = team
        self.user = user
        self.owner = owner
        self.credentials = credentials
        # Channels a mapping rule brought in (joined through `join`); direct and group
        # messages always come through, like a phone's chats.
        self.mapped: set[str] = set()
