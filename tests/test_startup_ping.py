"""The start-up ping of the homeserver (it makes the homeserver send what it queued at once):
a server error is tried again a few times, a refusal is not, and the admin reads why."""

from __future__ import annotations

import logging

from mautrix.errors import MatrixUnknownRequestError

from bridge.app_lifecycle import ping_homeserver


class Homeserver:
    """Answers the ping as Synapse does: with the given errors first, then with success."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.pings = 0

    async def ping(self) -> int:
        self.pings += 1
        if self.errors:
            status = self.errors.pop(0)
            raise MatrixUnknownRequestError(status, '{"errcode": "M_UNKNOWN", "error": '
                                            '"AlreadyCalled"}', "M_UNKNOWN", "AlreadyCalled")
        return 3


async def test_a_502_from_the_homeserver_is_tried_again(caplog):
    caplog.set_level(logging.INFO, "relayforge")
    homeserver = Homeserver(502, 502)
    assert await ping_homeserver(homeserver.ping, delay=0)
    assert homeserver.pings == 3
    assert "ping failed (502 AlreadyCalled); trying again" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_ping_that_keeps_failing_is_given_up_with_a_warning(caplog):
    homeserver = Homeserver(*[502] * 10)
    assert not await ping_homeserver(homeserver.ping, tries=3, delay=0)
    assert homeserver.pings == 3
    assert "ping failed 3 times (last: 502 AlreadyCalled)" in caplog.text


async def test_a_refused_ping_is_not_tried_again(caplog):
    homeserver = Homeserver(403)
    assert not await ping_homeserver(homeserver.ping, delay=0)
    assert homeserver.pings == 1
    assert "refused the appservice ping (403" in caplog.text
