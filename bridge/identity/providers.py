"""Sign-in providers: generic OpenID Connect, and OAuth2 providers with a userinfo call.

authlib's OAuth2 client builds the authorization URL (state, PKCE S256, nonce) and exchanges
the code; joserfc validates OIDC id_tokens (signature against the provider's JWKS, issuer,
audience, expiry, nonce). Redirect URIs are exact: one per provider, built from the bridge's
public URL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from authlib.integrations.httpx_client import AsyncOAuth2Client
    from joserfc.jwk import KeySet

from ..config import get_path

log = logging.getLogger("relayforge.signin")

ID_TOKEN_ALGORITHMS = ["RS256", "PS256", "ES256", "Ed25519", "EdDSA"]


class SignInError(Exception):
    """The provider's answer cannot be trusted or used; the message says why."""


@attrs.frozen
class VerifiedIdentity:
    """Who the provider says signed in, after every check passed."""

    provider_id: str
    issuer: str
    subject: str
    email: str | None
    email_verified: bool


@attrs.frozen
class ProviderConfig:
    id: str
    type: str  # "oidc" or "oauth2"
    name: str
    client_id: str
    client_secret: str = attrs.field(repr=False)
    scopes: tuple[str, ...]
    trust_email: bool
    discovery_url: str | None = None
    issuer: str | None = None
    authorize_url: str | None = None
    token_url: str | None = None
    userinfo_url: str | None = None
    userinfo_fields: Mapping[str, str | None] = attrs.field(factory=dict)
    pkce: bool = True


def _dig(data: Any, path: str | None) -> Any:
    if not path:
        return None
    for part in path.split("."):
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


class SignInProvider:
    def __init__(self, config: ProviderConfig, redirect_uri: str) -> None:
        self.config = config
        self.redirect_uri = redirect_uri
        self._metadata: dict[str, Any] | None = None
        self._jwks: KeySet | None = None
        self._jwks_fetched = 0.0

    @property
    def id(self) -> str:
        return self.config.id

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            cfg = self.config
            if cfg.type == "oidc":
                import httpx2  # with authlib and joserfc, about 7 MiB: at the first sign-in

                async with httpx2.AsyncClient(timeout=10) as http:
                    response = await http.get(cfg.discovery_url)
                response.raise_for_status()
                self._metadata = response.json()
            else:
                self._metadata = {
                    "issuer": cfg.issuer, "authorization_endpoint": cfg.authorize_url,
                    "token_endpoint": cfg.token_url, "userinfo_endpoint": cfg.userinfo_url,
                    "code_challenge_methods_supported": ["S256"] if cfg.pkce else [],
                }
        return self._metadata

    async def uses_pkce(self) -> bool:
        methods = (await self.metadata()).get("code_challenge_methods_supported") or []
        return "S256" in methods

    def _client(self) -> AsyncOAuth2Client:
        from authlib.integrations.httpx_client import AsyncOAuth2Client

        return AsyncOAuth2Client(
            client_id=self.config.client_id, client_secret=self.config.client_secret,
            scope=" ".join(self.config.scopes), redirect_uri=self.redirect_uri,
            code_challenge_method="S256", timeout=15,
        )

    async def authorization_url(self, state: str, verifier: str | None, nonce: str) -> str:
        meta = await self.metadata()
        extra: dict[str, str] = {}
        if self.config.type == "oidc":
            extra["nonce"] = nonce
        async with self._client() as client:
            url, _ = client.create_authorization_url(
                meta["authorization_endpoint"], state=state, code_verifier=verifier, **extra)
        return url

    async def finish(self, code: str, verifier: str | None, nonce: str) -> VerifiedIdentity:
        """Exchange the code and establish who signed in."""
        import httpx2
        from authlib.integrations.base_client.errors import OAuthError

        meta = await self.metadata()
        try:
            async with self._client() as client:
                token = await client.fetch_token(meta["token_endpoint"], code=code,
                                                 code_verifier=verifier)
                claims = None
                if self.config.type == "oidc":
                    claims = await self._validated_id_token(token, nonce, meta)
                    if not meta.get("userinfo_endpoint"):
                        return self._identity(claims, meta, "sub", "email", "email_verified")
                response = await client.get(meta["userinfo_endpoint"])
                response.raise_for_status()
                info = response.json()
        except (OAuthError, httpx2.HTTPError, ValueError) as e:
            raise SignInError(f"{self.config.name} did not accept the sign-in ({e})") from e
        if claims is not None:
            # The id_token proves who signed in; userinfo adds the email. OIDC Core 5.3.2:
            # userinfo about anyone else must not be used.
            if str(info.get("sub")) != str(claims["sub"]):
                raise SignInError(f"{self.config.name} answered userinfo for another user")
            return self._identity(info, meta, "sub", "email", "email_verified")
        fields = self.config.userinfo_fields
        return self._identity(info, meta, fields.get("subject") or "sub",
                              fields.get("email") or "email", fields.get("email_verified"))

    async def _keys(self, meta: Mapping[str, Any], refresh: bool = False) -> KeySet:
        # Providers rotate keys: refetch when asked to, at most once a minute.
        if self._jwks is None or (refresh and time.monotonic() - self._jwks_fetched > 60):
            import httpx2
            from joserfc.jwk import KeySet

            async with httpx2.AsyncClient(timeout=10) as http:
                response = await http.get(meta["jwks_uri"])
            response.raise_for_status()
            self._jwks = KeySet.import_key_set(response.json())
            self._jwks_fetched = time.monotonic()
        return self._jwks

    async def _validated_id_token(self, token: Mapping[str, Any], nonce: str,
                                  meta: Mapping[str, Any]) -> dict[str, Any]:
        """Validate the id_token, the proof of authentication; return its claims."""
        from joserfc import jwt
        from joserfc.errors import JoseError

        raw = token.get("id_token")
        if not raw:
            raise SignInError(f"{self.config.name} returned no id_token")
        try:
            try:
                decoded = jwt.decode(raw, await self._keys(meta), algorithms=ID_TOKEN_ALGORITHMS)
            except JoseError:
                decoded = jwt.decode(raw, await self._keys(meta, refresh=True),
                                     algorithms=ID_TOKEN_ALGORITHMS)
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": meta["issuer"]},
                aud={"essential": True, "value": self.config.client_id},
                sub={"essential": True},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as e:
            raise SignInError(f"the id_token from {self.config.name} is not valid ({e})") from e
        return dict(decoded.claims)

    def _identity(self, info: Mapping[str, Any], meta: Mapping[str, Any], subject_field: str,
                  email_field: str, verified_field: str | None) -> VerifiedIdentity:
        subject = _dig(info, subject_field)
        if subject in (None, ""):
            raise SignInError(f"{self.config.name} did not say who signed in")
        email = _dig(info, email_field)
        verified = _dig(info, verified_field)
        return VerifiedIdentity(self.config.id, meta["issuer"], str(subject),
                                email if isinstance(email, str) else None, verified is True)


def config_problems(effective: Mapping[str, Any], networks: Mapping[str, Any]) -> list[str]:
    """The `identity.providers` check (`bridge.config.ConfigCheck`)."""
    return parse_providers(get_path(effective, "identity.providers", None))[1]


def parse_providers(raw: Any) -> tuple[list[ProviderConfig], list[str]]:
    """Provider configs from `identity.providers`, and problems naming the bad keys."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        return [], ["identity.providers: expected a list of providers"]
    providers, problems, seen = [], [], set()
    for index, item in enumerate(raw):
        where = f"identity.providers[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{where}: expected a mapping")
            continue
        kind = item.get("type")
        need = ["id", "client_id", "client_secret"]
        need += ["discovery_url"] if kind == "oidc" else [
            "issuer", "authorize_url", "token_url", "userinfo_url"]
        if kind not in ("oidc", "oauth2"):
            problems.append(f"{where}.type: got {kind!r}; expected oidc or oauth2")
            continue
        missing = [key for key in need if not isinstance(item.get(key), str) or not item[key]]
        problems += [f"{where}.{key}: missing; expected a string" for key in missing]
        if missing:
            continue
        if item["id"] in seen or not item["id"].replace("-", "").replace("_", "").isalnum():
            problems.append(f"{where}.id: {item['id']!r} must be unique and alphanumeric")
            continue
        seen.add(item["id"])
        providers.append(ProviderConfig(
            id=item["id"], type=kind, name=str(item.get("name") or item["id"]),
            client_id=item["client_id"], client_secret=item["client_secret"],
            scopes=tuple(item.get("scopes") or (["openid", "email"] if kind == "oidc" else [])),
            trust_email=item.get("trust_email") is True,
            discovery_url=item.get("discovery_url"), issuer=item.get("issuer"),
            authorize_url=item.get("authorize_url"), token_url=item.get("token_url"),
            userinfo_url=item.get("userinfo_url"),
            userinfo_fields=dict(item.get("userinfo_fields") or {}),
            pkce=item.get("pkce", True) is not False,
        ))
    return providers, problems
