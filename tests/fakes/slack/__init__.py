"""A wire-level fake of Slack for end-to-end tests of the Slack connector.

The unmodified slack-sdk talks to it over HTTP and WebSocket on 127.0.0.1: the Web API under
/api/, Socket Mode at /ws, the Events API pushed to a request URL, OAuth v2 with token
rotation, file uploads and downloads. See server.FakeSlack for the test-facing controls.
"""

from .events_api import HttpDelivery, sign
from .models import (
    Channel,
    Enterprise,
    Message,
    RequestRecord,
    SlackApp,
    SlackError,
    SlackFile,
    Team,
    Token,
    User,
)
from .server import FakeSlack
from .socket_mode import Connection, Envelope

__all__ = [
    "Channel",
    "Connection",
    "Enterprise",
    "Envelope",
    "FakeSlack",
    "HttpDelivery",
    "Message",
    "RequestRecord",
    "SlackApp",
    "SlackError",
    "SlackFile",
    "Team",
    "Token",
    "User",
    "sign",
]
