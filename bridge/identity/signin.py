"""Signing in and linking with proof of ownership, following the secure-linking design note.

Every flow starts with a single-use `state` bound to the browser. The state is signed, not
stored: an anonymous visitor asking for sign-in pages costs no database row; only a state that
comes back from the provider to the browser it was made for is remembered (so it works once).
PKCE verifiers and nonces are derived from the state with a key sealed in the vault, so nothing
secret about a flow is stored.
Linking happens only when the person has proven both sides; an email match links only when a
trusted provider verified the address on both sides and exactly one account has it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

import attrs

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.login_identity import LoginIdentity
from .accounts import Accounts
from .errors import IdentityError
from .merge import MergeResult, Merges
from .providers import SignInError, SignInProvider, VerifiedIdentity

STATE_TTL = 10 * 60
PENDING_TTL = 10 * 60
SESSION_TTL = 12 * 60 * 60
HANDOFF_TTL = 10 * 60
CODE_MEMORY = 24 * 60 * 60


class Purpose(StrEnum):
    SIGN_IN = "signin"  # who are you?
    LINK = "link"  # from the account choice page: sign in to the account to link to
    MERGE = "merge"  # from settings: sign in to the other account, to merge it into this one
    ADD = "add"  # from the portal: another way to sign in to the account signed in here


# Purposes whose state is signed for the account signed in when the flow started: the
# answer must come back to that same account.
_FOR_ACCOUNT = (Purpose.MERGE, Purpose.ADD)


class Outcome(StrEnum):
    SIGNED_IN = "signed_in"
    PROVIDER_ADDED = "provider_added"
    PENDING_CHOICE = "pending_choice"
    EXISTING_SESSION = "existing_session"
    MERGE_SESSION = "merge_session"


@attrs.frozen
class CallbackResult:
    outcome: Outcome
    provider_name: str
    identity: VerifiedIdentity
    # The bridge session (signed in), the pending choice, or the hand-off session id.
    session_id: str
    account_id: str | None = None
    pending_session_id: str | None = None


class FlowRefused(Exception):
    """The request is not part of a valid flow: nothing was changed."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status that fits: 400, or 403 when not signed in


Notify = Callable[[str, str], Awaitable[None]]  # (mxid, text)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SignIn:
    def __init__(self, storage: Storage, audit: AuditLog, accounts: Accounts, merges: Merges,
                 providers: dict[str, SignInProvider], flow_key: bytes,
                 notify: Notify | None = None) -> None:
        self.storage = storage
        self.audit = audit
        self.accounts = accounts
        self.merges = merges
        self.providers = providers
        self._flow_key = flow_key
        self.notify = notify

    def provider(self, provider_id: str) -> SignInProvider:
        try:
            return self.providers[provider_id]
        except KeyError:
            raise FlowRefused(f"unknown sign-in provider {provider_id!r}") from None

    def _derive(self, label: str, state: str) -> str:
        return _b64(hmac.new(self._flow_key, f"{label}\0{state}".encode(),
                             hashlib.sha256).digest())

    # ---- sessions --------------------------------------------------------------------------

    async def new_session(self, account_id: str, browser: str) -> str:
        return await self.storage.one_time.issue("web_session", SESSION_TTL,
                                                 account_id=account_id, browser=browser)

    async def session_account(self, session_id: str | None, browser: str | None = None
                              ) -> str | None:
        """The account a bridge session belongs to; None if unknown, expired, or (when a
        browser is given) from another browser."""
        if not session_id:
            return None
        record = await self.storage.one_time.peek("web_session", session_id)
        if record is None or (browser is not None and record.browser != browser):
            return None
        account = await self.storage.accounts.get(record.account_id or "")
        if account is None or account.merged_into:
            return None
        return account.id

    # ---- the OAuth dance -------------------------------------------------------------------

    def _state_mac(self, provider_id: str, browser: str, account_id: str | None,
                   body: str) -> str:
        return self._derive("state", f"{provider_id}\0{browser}\0{account_id or ''}\0{body}")

    def _verified_state(self, provider_id: str, state: str, browser: str,
                        account_id: str | None) -> Purpose | None:
        """The purpose of a state made here for this provider, this browser and (merges) this
        signed-in account, and not expired; None otherwise."""
        body, _, mac = state.rpartition(".")
        purpose_value, _, rest = body.partition(".")
        expires, _, _nonce = rest.partition(".")
        try:
            purpose = Purpose(purpose_value)
            expired = int(expires) < time.time()
        except ValueError:
            return None
        signed_for = account_id if purpose in _FOR_ACCOUNT else None
        expected = self._state_mac(provider_id, browser, signed_for, body)
        if expired or not hmac.compare_digest(mac.encode(), expected.encode()):
            return None
        return purpose

    async def start(self, provider_id: str, purpose: Purpose, browser: str,
                    account_id: str | None = None) -> str:
        provider = self.provider(provider_id)
        body = f"{purpose.value}.{int(time.time()) + STATE_TTL}.{secrets.token_urlsafe(16)}"
        signed_for = account_id if purpose in _FOR_ACCOUNT else None
        state = f"{body}.{self._state_mac(provider_id, browser, signed_for, body)}"
        verifier = self._derive("pkce", state) if await provider.uses_pkce() else None
        return await provider.authorization_url(state, verifier, self._derive("nonce", state))

    async def callback(self, provider_id: str, code: str | None, state: str | None,
                       browser: str, account_id: str | None = None) -> CallbackResult:
        """The provider sent the browser back. `account_id` is the account this browser is
        signed in to (a merge must come back to the account that started it)."""
        provider = self.provider(provider_id)
        if not code or not state:
            raise FlowRefused("the sign-in answer lacks its code or state")
        refused = FlowRefused("this sign-in was not started here, was already used, or "
                              "expired: start again")
        # Checked before it is remembered as used: a state brought by another browser (or
        # to another provider) is refused and stays good for its own browser.
        purpose = self._verified_state(provider_id, state, browser, account_id)
        if purpose is None:
            raise refused
        if not await self.storage.one_time.remember("oauth_state", state, STATE_TTL):
            raise refused
        if not await self.storage.one_time.remember("oauth_code", f"{provider_id}\0{code}",
                                                    CODE_MEMORY):
            raise FlowRefused("this authorization code was already used")
        verifier = self._derive("pkce", state) if await provider.uses_pkce() else None
        try:
            identity = await provider.finish(code, verifier, self._derive("nonce", state))
        except SignInError as e:
            raise FlowRefused(str(e)) from e
        known = await self.storage.identities.get(identity.issuer, identity.subject)
        name = provider.config.name
        if purpose == Purpose.LINK:
            if known is None:
                raise FlowRefused(f"this {name} sign-in is not linked to any account; choose "
                                  "one you already use with RelayForge")
            handoff = await self.storage.one_time.issue(
                "link_session", HANDOFF_TTL, account_id=known.account_id, browser=browser)
            return CallbackResult(Outcome.EXISTING_SESSION, name, identity, handoff,
                                  known.account_id)
        if purpose == Purpose.MERGE:
            if known is None:
                raise FlowRefused(f"this {name} sign-in has no account to merge")
            if known.account_id == account_id:
                raise FlowRefused("that sign-in belongs to the account you are signed in to")
            handoff = await self.storage.one_time.issue(
                "merge_session", HANDOFF_TTL, account_id=known.account_id, browser=browser)
            return CallbackResult(Outcome.MERGE_SESSION, name, identity, handoff,
                                  known.account_id)
        if purpose == Purpose.ADD:
            return await self._add_method(provider, identity, known, browser, account_id)
        return await self._sign_in(provider, identity, known, browser)

    async def _add_method(self, provider: SignInProvider, identity: VerifiedIdentity,
                          known: LoginIdentity | None, browser: str, account_id: str | None
                          ) -> CallbackResult:
        """Another sign-in method for the signed-in account (proven just now at the
        provider); one that belongs to another account is refused (merging is its own
        flow, from settings)."""
        name = provider.config.name
        if account_id is None:
            raise FlowRefused("your session ended: sign in again", 403)
        if known is not None:
            raise FlowRefused(f"this {name} sign-in is already a way to sign in to "
                              + ("this account" if known.account_id == account_id else
                                 "another RelayForge account; merge that account from the "
                                 "settings instead"))
        trusted = provider.config.trust_email and identity.email_verified and bool(
            identity.email)
        if not await self._add_identity(account_id, identity, trusted, "added",
                                        actor=account_id):
            raise FlowRefused("that sign-in was linked to an account meanwhile")
        session = await self.new_session(account_id, browser)
        return CallbackResult(Outcome.PROVIDER_ADDED, name, identity, session, account_id)

    async def _sign_in(self, provider: SignInProvider, identity: VerifiedIdentity,
                       known: LoginIdentity | None, browser: str) -> CallbackResult:
        name = provider.config.name
        if known is not None:
            session = await self.new_session(known.account_id, browser)
            return CallbackResult(Outcome.SIGNED_IN, name, identity, session, known.account_id)
        # Always look the address up, whatever the provider says about it, so the time taken
        # does not tell whether the address is known.
        owners = await self.storage.identities.accounts_with_trusted_email(identity.email or "")
        trusted = provider.config.trust_email and identity.email_verified and bool(
            identity.email)
        if trusted and len(owners) == 1:
            account_id = owners[0]
            if await self._add_identity(account_id, identity, trusted, "provider_added",
                                        actor="system"):
                await self._tell_added(account_id, name, identity)
                session = await self.new_session(account_id, browser)
                return CallbackResult(Outcome.PROVIDER_ADDED, name, identity, session,
                                      account_id)
        pending = await self.storage.one_time.issue(
            "pending_choice", PENDING_TTL, browser=browser,
            payload={"provider": identity.provider_id, "issuer": identity.issuer,
                     "subject": identity.subject, "email": identity.email,
                     "email_verified": identity.email_verified, "email_trusted": trusted})
        await self.audit.append(AuditEvent.PENDING_CHOICE, actor="system",
                                details={"provider": identity.provider_id})
        return CallbackResult(Outcome.PENDING_CHOICE, name, identity, pending,
                              pending_session_id=pending)

    async def _add_identity(self, account_id: str, identity: VerifiedIdentity, trusted: bool,
                            how: str, actor: str) -> bool:
        added = await self.storage.identities.add(LoginIdentity(
            identity.issuer, identity.subject, identity.provider_id, account_id,
            identity.email, identity.email_verified, trusted, how))
        if added:
            await self.audit.append(
                AuditEvent.LINK, actor=actor, account=account_id,
                details={"provider": identity.provider_id, "issuer": identity.issuer,
                         "how": how})
        return added

    async def _tell_added(self, account_id: str, name: str, identity: VerifiedIdentity) -> None:
        if self.notify is None:
            return
        text = (f"{name} ({identity.email}) was added to your RelayForge account as a way to "
                "sign in, because it proved the same verified email address. If this was not "
                'you, send "undo" here to remove it.')
        for mxid in await self.storage.accounts.matrix_users(account_id):
            await self.notify(mxid, text)

    # ---- after the account choice ----------------------------------------------------------

    def _pending_identity(self, payload: dict[str, Any]) -> tuple[VerifiedIdentity, bool]:
        return (VerifiedIdentity(payload["provider"], payload["issuer"], payload["subject"],
                                 payload["email"], payload["email_verified"]),
                payload["email_trusted"])

    async def pending(self, pending_id: str, browser: str) -> dict[str, Any] | None:
        """What the account choice page shows; None if the session is not valid here."""
        record = await self.storage.one_time.peek("pending_choice", pending_id)
        if record is None or record.browser != browser:
            return None
        return record.payload

    async def create_account(self, pending_id: str, browser: str) -> str:
        """"Create new RelayForge account" from a pending choice; returns a bridge session."""
        record = await self.storage.one_time.consume("pending_choice", pending_id,
                                                     browser=browser)
        if record is None:
            raise FlowRefused("this choice expired or was already made: sign in again")
        identity, trusted = self._pending_identity(record.payload)
        account = await self.accounts.create_account(actor="system")
        if not await self._add_identity(account.id, identity, trusted, "sign_up",
                                        actor=account.id):
            raise FlowRefused("that sign-in was linked to an account meanwhile")
        return await self.new_session(account.id, browser)

    async def complete_linking(self, pending_id: str, existing_id: str, browser: str
                               ) -> tuple[str, VerifiedIdentity]:
        """Link the pending identity to the account the person just signed in to."""
        pending = await self.storage.one_time.peek("pending_choice", pending_id)
        existing = await self.storage.one_time.peek("link_session", existing_id)
        if (pending is None or existing is None or pending.browser != browser
                or existing.browser != browser):
            raise FlowRefused("the linking sessions expired, were used already, or belong to "
                              "another browser: sign in again")
        # Both checked; now use both up (a racing second request fails here).
        pending = await self.storage.one_time.consume("pending_choice", pending_id,
                                                      browser=browser)
        existing = await self.storage.one_time.consume("link_session", existing_id,
                                                       browser=browser)
        if pending is None or existing is None or existing.account_id is None:
            raise FlowRefused("the linking sessions were used already: sign in again")
        identity, trusted = self._pending_identity(pending.payload)
        if not await self._add_identity(existing.account_id, identity, trusted, "linked",
                                        actor=existing.account_id):
            raise FlowRefused("that sign-in is already linked to an account")
        return existing.account_id, identity

    async def merge(self, session_id: str, merge_session_id: str, browser: str | None
                    ) -> MergeResult:
        """Merge the account of `merge_session_id` into the signed-in account."""
        into = await self.session_account(session_id, browser)
        if into is None:
            raise FlowRefused("your session is unknown or expired: sign in first", 403)
        handoff = await self.storage.one_time.consume("merge_session", merge_session_id,
                                                      browser=browser)
        if handoff is None or handoff.account_id is None:
            raise FlowRefused("the merge session expired or was already used: sign in to the "
                              "other account again")
        try:
            return await self.merges.merge(into, handoff.account_id, actor=into)
        except IdentityError as e:
            raise FlowRefused(str(e)) from e

    async def end_session(self, session_id: str) -> None:
        """Sign out: the session cookie stops working, in every browser."""
        if session_id:
            await self.storage.one_time.revoke("web_session", session_id)

    async def merge_source(self, merge_session_id: str, browser: str) -> str | None:
        """The account a merge hand-off would merge (to show before it happens)."""
        record = await self.storage.one_time.peek("merge_session", merge_session_id)
        if record is None or record.browser != browser:
            return None
        return record.account_id

    async def login_link_user(self, token: str) -> str | None:
        """The Matrix user a bot's login link signs in as, without using the link up (so
        the page can ask first, and a link preview fetching it burns nothing)."""
        record = await self.storage.one_time.peek("login_link", token) if token else None
        return record.mxid if record is not None else None

    async def matrix_login(self, token: str, browser: str) -> str:
        """A login link from the bot: a bridge session for that Matrix user's account."""
        record = await self.storage.one_time.consume("login_link", token)
        if record is None or record.mxid is None:
            raise FlowRefused("this sign-in link expired or was already used: send "
                              '"login-link" to the bot for a new one')
        account = await self.accounts.for_matrix_user(record.mxid)
        return await self.new_session(account.id, browser)

    async def matrix_link_session(self, token: str, browser: str) -> str:
        """A login link used from the account choice page: a hand-off for linking."""
        record = await self.storage.one_time.consume("login_link", token)
        if record is None or record.mxid is None:
            raise FlowRefused("this sign-in link expired or was already used")
        account = await self.accounts.for_matrix_user(record.mxid)
        return await self.storage.one_time.issue("link_session", HANDOFF_TTL,
                                                 account_id=account.id, browser=browser)

    async def undo_provider_added(self, account_id: str, actor: str) -> str | None:
        """Remove the newest automatically added sign-in method (the bot's `undo`)."""
        identities = [i for i in await self.storage.identities.for_account(account_id)
                      if i.added_how == "provider_added"]
        if not identities:
            return None
        newest = max(identities, key=lambda i: i.added_at)
        await self.storage.identities.remove(newest.issuer, newest.subject)
        name = self.providers[newest.provider_id].config.name if (
            newest.provider_id in self.providers) else newest.provider_id
        await self.audit.append(AuditEvent.UNLINK, actor=actor, account=account_id,
                                details={"provider": newest.provider_id, "how": "undo"})
        return name
