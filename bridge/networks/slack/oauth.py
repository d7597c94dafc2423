"""Linking a Slack account: OAuth 2.0 v2 with user scopes, then a verification ping.

The bridge acts as the person with their user token (xoxp-, or xoxe.xoxp- with token
rotation). The code is exchanged with `oauth.v2.access`; `auth.test` and `conversations.list`
prove the token works before anything is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from ...security.access_tokens import RefreshedTokens
from ..lazy import lazy
from ..login import LinkedAccount, LoginFailed, LoginStep

if TYPE_CHECKING:
    from slack_sdk import errors as slack_errors
    from slack_sdk.web import async_client
else:
    # slack-sdk is imported when the first link finishes or the first token is refreshed.
    slack_errors, async_client = lazy("slack_sdk.errors"), lazy("slack_sdk.web.async_client")

# What the bridge needs to read and write as the person, and nothing more.
USER_SCOPES = (
    "channels:read", "channels:history", "groups:read", "groups:history", "im:read",
    "im:history", "mpim:read", "mpim:history", "chat:write", "users:read", "reactions:read",
    "reactions:write", "files:read", "files:write",
)

SCOPE_WORDS = {
    "channels:read": "see your public channels",
    "channels:history": "read messages in your public channels",
    "groups:read": "see your private channels",
    "groups:history": "read messages in your private channels",
    "im:read": "see your direct messages",
    "im:history": "read your direct messages",
    "mpim:read": "see your group direct messages",
    "mpim:history": "read your group direct messages",
    "chat:write": "send, edit and delete messages as you",
    "users:read": "see people's names and pictures",
    "reactions:read": "see reactions",
    "reactions:write": "add and remove reactions as you",
    "files:read": "download files shared with you",
    "files:write": "upload files as you",
}


def describe(scopes: list[str]) -> list[str]:
    return [f"{SCOPE_WORDS.get(s, s)} ({s})" for s in scopes]


class SlackOAuth:
    def __init__(self, settings: dict[str, Any], api_url: str) -> None:
        self.client_id = settings.get("client_id")
        self.client_secret = settings.get("client_secret")
        self.authorize_url = settings["oauth_url"]
        self.api_url = api_url
        self.rotation = bool(settings.get("token_rotation"))

    def _client(self, token: str | None = None) -> async_client.AsyncWebClient:
        return async_client.AsyncWebClient(token=token, base_url=self.api_url)

    def begin(self, state: str, code_challenge: str, redirect_uri: str) -> LoginStep:
        if not self.client_id or not self.client_secret:
            raise LoginFailed("Slack linking is not set up on this bridge (the admin must set "
                              "networks.slack.client_id and client_secret).")
        query = urlencode({"client_id": self.client_id, "user_scope": ",".join(USER_SCOPES),
                           "redirect_uri": redirect_uri, "state": state,
                           "code_challenge": code_challenge,
                           "code_challenge_method": "S256"})
        return LoginStep(
            message="Open this link, sign in to your Slack workspace and allow RelayForge. "
                    "Then come back here: I will ask for your consent. The link works once, "
                    "for 15 minutes.",
            url=f"{self.authorize_url}?{query}", state={})

    async def finish(self, answers: dict[str, str]) -> LinkedAccount:
        """Exchange the code, then prove the token works."""
        try:
            response = await self._client().oauth_v2_access(
                client_id=self.client_id, client_secret=self.client_secret,
                code=answers["code"], redirect_uri=answers["redirect_uri"],
                code_verifier=answers["code_verifier"])
        except slack_errors.SlackApiError as e:
            raise LoginFailed(f"Slack refused the authorisation ({e.response.get('error')}). "
                              "Nothing was stored; start again with \"link slack\".") from e
        user = response.get("authed_user") or {}
        token = user.get("access_token")
        if not token:
            raise LoginFailed("Slack gave no user token (the app must ask for user scopes). "
                              "Nothing was stored.")
        scopes = sorted(filter(None, (user.get("scope") or "").split(",")))
        missing = sorted(set(USER_SCOPES) - set(scopes))
        if missing:
            raise LoginFailed(f"Slack did not grant {', '.join(missing)}: RelayForge needs "
                              "them. Nothing was stored.")
        client = self._client(token)
        try:
            who = await client.auth_test()
            profile = await client.users_info(user=who["user_id"])
            # The person's own workspace (an org-wide Enterprise Grid install speaks for the
            # organisation, and must name the workspace when listing).
            team = profile["user"].get("team_id") or who.get("team_id")
            channels = await client.conversations_list(
                types="public_channel,private_channel,mpim,im", limit=200, team_id=team)
        except slack_errors.SlackApiError as e:
            raise LoginFailed(f"The new Slack token does not work ({e.response.get('error')})."
                              " Nothing was stored.") from e
        credentials = {"access_token": token, "team_id": team, "user_id": who["user_id"]}
        if user.get("refresh_token"):
            # With rotation, only the refresh token is kept (sealed); access tokens are
            # fetched into memory when needed.
            credentials = {"refresh_token": user["refresh_token"], "team_id": team,
                           "user_id": who["user_id"]}
        markers = ["enterprise_grid"] if (who.get("enterprise_id")
                                          or response.get("is_enterprise_install")) else []
        names = profile["user"].get("profile", {})
        return LinkedAccount(
            external_user_id=f"{team}/{who['user_id']}",
            display_name=names.get("display_name") or names.get("real_name")
            or who.get("user"),
            scopes=scopes, credentials=credentials,
            verified=[f"signed in to {who.get('team') or team} as {who.get('user')}",
                      f"can list {len(channels.get('channels', []))} conversations"],
            risk_markers=markers, avatar_hash=names.get("avatar_hash") or None)

    async def refresh(self, refresh_token: str) -> RefreshedTokens:
        """Token rotation: a new access token, and a new (single-use) refresh token."""
        response = await self._client().oauth_v2_access(
            client_id=self.client_id, client_secret=self.client_secret,
            grant_type="refresh_token", refresh_token=refresh_token)
        # A user token refresh answers at the top level (or under authed_user).
        data = response.get("authed_user") or response.data
        return RefreshedTokens(access_token=data["access_token"],
                               expires_in=int(data.get("expires_in") or 43200),
                               refresh_token=data.get("refresh_token"))
