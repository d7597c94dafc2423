"""Linking a Discord account: OAuth2's authorisation-code flow (scopes `identify guilds`,
PKCE, the exact redirect URI), then the verification ping (`GET /users/@me`,
`GET /users/@me/guilds`) before anything is stored.

Only the refresh token is kept (sealed in the vault, rotated on every refresh); access
tokens live in memory. The person's account never sends anything itself: the bridge's bot
and its webhooks do, under the person's name, while the grant is valid."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

import aiohttp

from ...security.access_tokens import RefreshedTokens
from ..login import LinkedAccount, LoginFailed, LoginStep

log = logging.getLogger("relayforge.discord.oauth")

SCOPES = ("identify", "guilds")
SCOPE_WORDS = {
    "identify": "know your Discord user name and picture, to post under them",
    "guilds": "see which servers you are in, to check you may map their channels",
}
# What the consent says about how the bridge acts for the person, since it is not their own
# account doing it.
HOW_IT_ACTS = ("your messages are posted by the bridge's webhook under your Discord name and "
               "picture; reactions are added by the RelayForge bot, and a reply carries a "
               "link to the message it answers (webhooks can do neither)")


def describe(scopes: list[str]) -> list[str]:
    return [*(f"{SCOPE_WORDS.get(s, s)} ({s})" for s in scopes), HOW_IT_ACTS]


class GrantGone(Exception):
    """Discord no longer honours the person's grant (revoked, or the refresh token spent)."""


class DiscordOAuth:
    def __init__(self, client_id: str, client_secret: str, api_url: str,
                 authorize_url: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.api_url = api_url.rstrip("/")
        self.authorize_url = authorize_url

    def begin(self, state: str, code_challenge: str, redirect_uri: str) -> LoginStep:
        query = urlencode({"client_id": self.client_id, "response_type": "code",
                           "scope": " ".join(SCOPES), "state": state,
                           "redirect_uri": redirect_uri, "code_challenge": code_challenge,
                           "code_challenge_method": "S256", "prompt": "consent"})
        return LoginStep(
            message="Open this link, sign in to Discord and authorise RelayForge. Then come "
                    "back here: I will ask for your consent. The link works once, for 15 "
                    "minutes.",
            url=f"{self.authorize_url}?{query}", state={})

    async def _token(self, form: dict[str, str]) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.api_url}/oauth2/token",
                data={**form, "client_id": self.client_id,
                      "client_secret": self.client_secret}) as r:
            data = await _json(r)
            if r.status == 400 and data.get("error") == "invalid_grant":
                raise GrantGone(data.get("error_description") or "invalid_grant")
            if r.status >= 400:
                raise LoginFailed(f"Discord refused the token request ({r.status} "
                                  f"{data.get('error') or data.get('message')}).")
            return data

    async def _get(self, access_token: str, path: str) -> Any:
        async with aiohttp.ClientSession() as http, http.get(
                f"{self.api_url}{path}",
                headers={"Authorization": f"Bearer {access_token}"}) as r:
            data = await _json(r)
            if r.status == 401:
                raise GrantGone("Discord answered 401 Unauthorized")
            if r.status >= 400:
                raise LoginFailed(f"Discord answered {r.status} to {path}")
            return data

    async def me(self, access_token: str) -> dict[str, Any]:
        return await self._get(access_token, "/users/@me")

    async def finish(self, answers: dict[str, str]) -> LinkedAccount:
        """Exchange the code (with the PKCE verifier and the same redirect URI), then prove
        the token works."""
        try:
            tokens = await self._token({
                "grant_type": "authorization_code", "code": answers["code"],
                "redirect_uri": answers["redirect_uri"],
                "code_verifier": answers["code_verifier"]})
        except GrantGone as e:
            raise LoginFailed(f"Discord refused the authorisation ({e}). Nothing was stored; "
                              "start again with \"link discord\".") from e
        scopes = sorted(filter(None, (tokens.get("scope") or "").split()))
        missing = sorted(set(SCOPES) - set(scopes))
        if missing:
            raise LoginFailed(f"Discord did not grant {', '.join(missing)}: RelayForge needs "
                              "them. Nothing was stored.")
        try:
            user = await self.me(tokens["access_token"])
            guilds = await self._get(tokens["access_token"], "/users/@me/guilds")
        except GrantGone as e:
            raise LoginFailed(f"The new Discord token does not work ({e}). Nothing was "
                              "stored.") from e
        name = user.get("global_name") or user.get("username") or user["id"]
        return LinkedAccount(
            external_user_id=str(user["id"]), display_name=name, scopes=scopes,
            credentials={"refresh_token": tokens["refresh_token"]},
            verified=[f"signed in to Discord as {user.get('username')} ({user['id']})",
                      f"can see {len(guilds)} server(s): "
                      + (", ".join(g.get("name", g["id"]) for g in guilds[:10]) or "none")],
            risk_markers=[f"server:{g['id']}" for g in guilds],
            avatar_hash=user.get("avatar"))

    async def refresh(self, refresh_token: str) -> RefreshedTokens:
        data = await self._token({"grant_type": "refresh_token",
                                  "refresh_token": refresh_token})
        return RefreshedTokens(access_token=data["access_token"],
                               expires_in=int(data.get("expires_in") or 604800),
                               refresh_token=data.get("refresh_token"))

    async def revoke(self, token: str) -> bool:
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.api_url}/oauth2/token/revoke",
                data={"token": token, "token_type_hint": "refresh_token",
                      "client_id": self.client_id, "client_secret": self.client_secret}) as r:
            if r.status >= 400:
                log.info("Discord token revocation answered %s", r.status)
            return r.status < 400


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        data = await response.json(content_type=None)
    except ValueError:
        return {}
    return data if isinstance(data, dict | list) else {}
