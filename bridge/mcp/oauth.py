"""The bridge as the OAuth 2.1 authorisation server of its MCP endpoint.

The `mcp` SDK serves the protocol side (RFC 8414 metadata, RFC 7591 registration, the
authorize, token and revocation endpoints, PKCE S256 and exact redirect URI checks); this
provider decides and stores. The person's consent happens on the bridge's own page
(`consent.py`), signed in with the bridge's web sign-in. Codes and tokens are kept only as
SHA-256 digests; client secrets are derived from a vault key and the client id when checked,
so none is stored either. A code or a rotated refresh token used twice revokes the agent: one
of the two uses was not its client's.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import time
from typing import Any
from urllib.parse import urlencode, urlparse

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    RefreshToken,
    RegistrationError,
    TokenError,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from ..audit import AuditEvent, AuditLog
from ..db import Storage

log = logging.getLogger("relayforge.mcp.oauth")

# What an agent may be granted: reading through the bridge, and the acts of the Matrix path.
SCOPES = ("read", "send", "edit", "delete", "react")
ACT_SCOPES = SCOPES[1:]
REQUEST_KIND = "mcp_authorization"
REQUEST_TTL = 600  # the consent page stays valid this long
CODE_TTL = 60
ACCESS_PREFIX, REFRESH_PREFIX = "rfa_", "rfr_"


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address((host or "").strip("[]")).is_loopback
    except ValueError:
        return False


def redirect_uri_problem(uri: str) -> str | None:
    """Why a client may not register this redirect URI (OAuth 2.1 section 2.3.1, RFC 8252),
    or None: https, or http only to this machine's loopback; no fragment."""
    parsed = urlparse(uri)
    if parsed.fragment:
        return f"{uri} has a fragment"
    if parsed.scheme == "https" and parsed.hostname:
        return None
    if parsed.scheme == "http" and _loopback(parsed.hostname):
        return None
    return f"{uri} is neither https nor http to a loopback address"


class AgentAuthorization:
    """`OAuthAuthorizationServerProvider` for the SDK, on the bridge's database."""

    def __init__(self, storage: Storage, audit: AuditLog, secret_key: bytes, public_url: str,
                 access_seconds: int, refresh_days: int) -> None:
        self.storage = storage
        self.agents = storage.agents
        self.audit = audit
        self._key = secret_key
        self.public_url = public_url
        self.access_seconds = access_seconds
        self.refresh_seconds = refresh_days * 86400

    def _client_secret(self, client_id: str) -> str:
        return hmac.new(self._key, f"mcp client\0{client_id}".encode(),
                        hashlib.sha256).hexdigest()

    # ---- clients (RFC 7591) ------------------------------------------------------------------

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        metadata = await self.agents.client(client_id)
        if metadata is None:
            return None
        secret = (None if metadata.get("token_endpoint_auth_method") == "none"
                  else self._client_secret(client_id))
        return OAuthClientInformationFull.model_validate(
            {**metadata, "client_id": client_id, "client_secret": secret})

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        for uri in client_info.redirect_uris or []:
            problem = redirect_uri_problem(str(uri))
            if problem is not None:
                raise RegistrationError("invalid_redirect_uri", problem)
        if not (client_info.client_name or "").strip():
            raise RegistrationError("invalid_client_metadata", "client_name is required: the "
                                    "person sees it on the consent page and in \"agents\"")
        if client_info.client_secret is not None:
            # The SDK minted a random secret; the client gets the derived one instead, so it
            # can be checked later without storing it.
            client_info.client_secret = self._client_secret(client_info.client_id or "")
        metadata = client_info.model_dump(mode="json", exclude_none=True,
                                          exclude={"client_id", "client_secret"})
        await self.agents.add_client(client_info.client_id or "", metadata)
        log.info("Registered MCP client %s (%s)", client_info.client_id,
                 client_info.client_name)

    # ---- authorisation -----------------------------------------------------------------------

    async def authorize(self, client: OAuthClientInformationFull,
                        params: AuthorizationParams) -> str:
        scopes = params.scopes or list(SCOPES)
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown:
            raise AuthorizeError("invalid_scope", f"unknown scope {unknown[0]}; this bridge "
                                 f"grants {' '.join(SCOPES)}")
        request = await self.storage.one_time.issue(REQUEST_KIND, REQUEST_TTL, payload={
            "client_id": client.client_id, "redirect_uri": str(params.redirect_uri),
            "explicit": params.redirect_uri_provided_explicitly, "state": params.state,
            "code_challenge": params.code_challenge, "scopes": scopes,
            "resource": params.resource})
        return f"{self.public_url}/auth/agent?{urlencode({'request': request})}"

    async def granted(self, account_id: str, request: dict[str, Any], name: str,
                      actions: list[str], profile_ids: list[str], networks: list[str]) -> str:
        """The person allowed the agent on the consent page: its grant and a code; returns
        the URL the browser goes back to the client with."""
        grant = await self.agents.add_grant(account_id, request["client_id"], name, actions,
                                            profile_ids, networks)
        code, _ = await self.agents.issue(
            "code", grant.id, request["client_id"], actions, CODE_TTL, payload={
                "redirect_uri": request["redirect_uri"], "explicit": request["explicit"],
                "code_challenge": request["code_challenge"], "resource": request["resource"]})
        await self.audit.append(AuditEvent.AGENT, actor=account_id, account=account_id,
                                details={"change": "authorised", "agent": grant.name,
                                         "agent_id": grant.id, "client": grant.client_id,
                                         "actions": ",".join(actions),
                                         "profiles": ",".join(profile_ids),
                                         "networks": ",".join(networks)})
        return _with_query(request["redirect_uri"], code=code, state=request["state"])

    async def load_authorization_code(self, client: OAuthClientInformationFull,
                                      authorization_code: str) -> AuthorizationCode | None:
        row = await self.agents.token("code", authorization_code)
        if row is None or row.client_id != client.client_id:
            return None
        return AuthorizationCode(
            code=authorization_code, scopes=list(row.scopes), expires_at=row.expires_at / 1000,
            client_id=row.client_id, code_challenge=row.payload["code_challenge"],
            redirect_uri=row.payload["redirect_uri"],
            redirect_uri_provided_explicitly=row.payload["explicit"],
            resource=row.payload.get("resource"), subject=row.grant_id)

    async def exchange_authorization_code(self, client: OAuthClientInformationFull,
                                          authorization_code: AuthorizationCode) -> OAuthToken:
        grant_id = authorization_code.subject or ""
        if not await self.agents.spend("code", authorization_code.code):
            await self._replayed(grant_id, "authorization code")
        return await self._tokens(grant_id, client.client_id or "",
                                  authorization_code.scopes, authorization_code.resource)

    async def _replayed(self, grant_id: str, what: str) -> None:
        grant = await self.agents.grant(grant_id)
        await self.agents.revoke_grant(grant_id)
        if grant is not None:
            log.warning("A used %s of agent %s came again: agent revoked", what, grant.id)
            await self.audit.append(AuditEvent.AGENT, actor=grant.account_id,
                                    account=grant.account_id,
                                    details={"change": "revoked", "agent": grant.name,
                                             "agent_id": grant.id,
                                             "reason": f"{what} used twice"})
        raise TokenError("invalid_grant", f"this {what} was already used; the agent's access "
                         "was revoked, authorise it again")

    async def _tokens(self, grant_id: str, client_id: str, scopes: list[str],
                      resource: str | None) -> OAuthToken:
        payload = {"resource": resource}
        access, _ = await self.agents.issue("access", grant_id, client_id, scopes,
                                            self.access_seconds, payload, ACCESS_PREFIX)
        refresh, _ = await self.agents.issue("refresh", grant_id, client_id, scopes,
                                             self.refresh_seconds, payload, REFRESH_PREFIX)
        return OAuthToken(access_token=access, token_type="Bearer",
                          expires_in=self.access_seconds, scope=" ".join(scopes),
                          refresh_token=refresh)

    async def load_refresh_token(self, client: OAuthClientInformationFull,
                                 refresh_token: str) -> RefreshToken | None:
        row = await self.agents.token("refresh", refresh_token)
        if row is None or row.client_id != client.client_id:
            return None
        return RefreshToken(token=refresh_token, client_id=row.client_id,
                            scopes=list(row.scopes), expires_at=row.expires_at // 1000,
                            resource=row.payload.get("resource"), subject=row.grant_id)

    async def exchange_refresh_token(self, client: OAuthClientInformationFull,
                                     refresh_token: RefreshToken, scopes: list[str]
                                     ) -> OAuthToken:
        grant_id = refresh_token.subject or ""
        if not await self.agents.spend("refresh", refresh_token.token):
            await self._replayed(grant_id, "refresh token")
        return await self._tokens(grant_id, client.client_id or "", scopes,
                                  refresh_token.resource)

    async def load_access_token(self, token: str) -> AccessToken | None:
        row = await self.agents.token("access", token)
        if row is None or row.expires_at <= time.time() * 1000:
            return None
        return AccessToken(token=token, client_id=row.client_id, scopes=list(row.scopes),
                           expires_at=row.expires_at // 1000,
                           resource=row.payload.get("resource"), subject=row.grant_id)

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        """The client asks (RFC 7009): the agent's whole access ends, like `agents revoke`."""
        if token.subject:
            grant = await self.agents.grant(token.subject)
            if await self.agents.revoke_grant(token.subject) and grant is not None:
                await self.audit.append(AuditEvent.AGENT, actor=grant.account_id,
                                        account=grant.account_id,
                                        details={"change": "revoked", "agent": grant.name,
                                                 "agent_id": grant.id,
                                                 "reason": "revoked by its client"})


def _with_query(uri: str, **params: str | None) -> str:
    parsed = urlparse(uri)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parsed.query}&{extra}" if parsed.query else extra
    return parsed._replace(query=query).geturl()
