"""Linking a Slack account the way a person does: the bot gives the authorisation link, the
browser signs in at (fake) Slack, comes back to the bridge, and the person consents."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import aiohttp
from mautrix.types import EventType

from tests.fakes.slack import FakeSlack
from tests.fakes.slack.models import User

from .matrix import MatrixUser


def slack_settings(slack: FakeSlack, callback: str, **extra: Any) -> dict[str, Any]:
    """The bridge's `networks.slack` section, pointed at the fake; the app accepts exactly
    the bridge's callback URL."""
    slack.app.redirect_uris = [callback]
    return {"enabled": True, "client_id": slack.app.client_id,
            "client_secret": slack.app.client_secret, "app_token": slack.app.app_token,
            "signing_secret": slack.app.signing_secret, "api_url": slack.api_url,
            "oauth_url": slack.authorize_endpoint, "min_send_interval_seconds": 0,
            **extra}


async def open_in_browser(url: str) -> tuple[int, str, str | None]:
    """GET without following redirects: (status, body, Location)."""
    async with aiohttp.ClientSession() as http, http.get(url, allow_redirects=False) as r:
        return r.status, await r.text(), r.headers.get("Location")


def browser_session() -> aiohttp.ClientSession:
    """A browser of its own: a cookie jar that keeps the bridge's browser cookie."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def open_start_link(http: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    """Open the bridge's start link and confirm its page: (the page's text, where the
    bridge sends the browser: Slack's authorisation URL)."""
    async with http.get(url, allow_redirects=False) as r:
        page = await r.text()
        assert r.status == 200, page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    flow = re.search(r'name="flow" value="([^"]+)"', page)
    assert csrf and flow, page
    async with http.post(url, data={"csrf": unescape(csrf.group(1)),
                                    "flow": unescape(flow.group(1))},
                         allow_redirects=False) as r:
        assert r.status == 303, await r.text()
        return page, r.headers["Location"]


async def authorise(slack: FakeSlack, person: User, url: str, *,
                    enterprise_install: bool = False,
                    http: aiohttp.ClientSession | None = None) -> tuple[int, str]:
    """In one browser (`http`, or a fresh one): open the bridge's start link, sign in at
    Slack as `person`, allow, and follow the redirect back to the bridge."""
    slack.sign_in(person, enterprise_install=enterprise_install)
    own = http is None
    http = http or browser_session()
    try:
        _, authorize = await open_start_link(http, url)
        status, _, location = await open_in_browser(authorize)
        assert status == 302 and location, f"Slack's page answered {status}"
        async with http.get(location, allow_redirects=False) as r:
            return r.status, await r.text()
    finally:
        if own:
            await http.close()


async def start_link(user: MatrixUser, bot: str, room: str, profile: str = "Jobb",
                     command: str | None = None) -> str:
    """`link slack` (or `command`, say a relink): returns the authorisation URL the bot
    gave in answer (not an earlier one)."""
    before = {e.event_id for e in await user.room_events(room)}
    await user.send_text(room, command or f"link slack --profile {profile}")
    notice = await user.wait_for_event(
        room, lambda e: e.event_id not in before and e.type == EventType.ROOM_MESSAGE
        and e.sender == bot and "Open: " in (e.content.body or ""), "the link to open")
    match = re.search(r"Open: (\S+)", notice.content.body)
    assert match, notice.content.body
    return match.group(1)


async def link_slack(user: MatrixUser, bot: str, slack: FakeSlack, person: User,
                     profile: str = "Jobb") -> str:
    """The whole link; returns the management room."""
    room = await user.open_management_room(bot)
    url = await start_link(user, bot, room, profile)
    status, _ = await authorise(slack, person, url)
    assert status == 200
    await user.wait_for_notice(room, bot, "Reply yes to link")
    await user.send_text(room, "yes")
    await user.wait_for_notice(room, bot, "Linked slack:")
    return room
