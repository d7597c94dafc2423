"""A wire-level fake of Discord for end-to-end tests of the Discord connector.

The unmodified discord.py talks to it over HTTP and WebSocket on 127.0.0.1: REST v10 under
/api/v10 (bot calls, webhook executions, OAuth2 bearer calls), the Gateway at /gateway,
OAuth2's authorisation page, attachments and avatars. See server.FakeDiscord for the
test-facing controls.
"""

from .models import FORUM, TEXT, Channel, Guild, Message, RequestRecord, User, Webhook
from .server import FakeDiscord

__all__ = ["FORUM", "TEXT", "Channel", "FakeDiscord", "Guild", "Message", "RequestRecord",
           "User", "Webhook"]
