"""Linking an account on a network: the flow every network shares.

The connector asks for what it needs step by step; the core keeps the flow (never a secret)
in the database, and when the connector has verified the account, records the persona, seals
its credentials in the vault and opens its session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.persona import Persona, PersonaStatus
from ..identity.accounts import Accounts
from ..identity.errors import IdentityError
from ..networks.base import Connector
from ..networks.login import Field, LinkedAccount, LoginFailed, LoginStep
from ..security.mfa import SETUP_HINT, VERIFY_HINT, Mfa, MfaRefused
from ..security.policy import Policy
from ..security.system_keys import link_flow_key
from ..security.vault import Vault
from .sessions import PersonaSessions
from .worker_calls import CallFailed

log = logging.getLogger("relayforge.linking")
FLOW_TTL = 15 * 60
# How long a login step handed to the worker holding the login may take there (Telegram's
# sign-in and verification ping).
ELSEWHERE_SECONDS = 180
# Credentials sealed while a person has not yet said which account is theirs are kept under
# a persona id with this prefix, until they choose or the flow expires.
_PENDING = "pending_"
_UNKNOWN_LINK = ("This link is unknown, expired, already used, or was opened in another "
                 "browser than the one that started it. Start again with \"link {network}\" "
                 "in your management room, and open its link in the browser you sign in "
                 "with.")


class LinkRefused(Exception):
    """Linking cannot go on; the message says why. Nothing was stored."""


@attrs.frozen
class LinkDone:
    persona: Persona
    verified: list[str]


class Linking:
    def __init__(self, storage: Storage, accounts: Accounts, vault: Vault, audit: AuditLog,
                 connectors: dict[str, Connector], sessions: PersonaSessions, *,
                 mfa: Mfa | None = None, policy: Policy | None = None,
                 callback_url: Callable[[str], str] = lambda network: "",
                 start_url: Callable[[str], str] = lambda network: "") -> None:
        self.storage = storage
        self.accounts = accounts
        self.vault = vault
        self.audit = audit
        self.connectors = connectors
        self.sessions = sessions
        # Called with the persona id when a persona that had lost its credentials is linked
        # again (what waited for it can go out now).
        self.on_relinked: list[Callable[[str], Awaitable[None]]] = []
        # Accounts the policy calls high-risk need a fresh MFA check before consent is even
        # asked.
        self.mfa = mfa
        self.policy = policy
        # OAuth networks: where their authorisation pages send the browser back to (from the
        # web URL), and who shows the person the next step once the browser came back (the
        # bot: consent is answered in the management room).
        self.callback_url = callback_url
        # Where the person opens an OAuth link first (the bridge's own page, which binds the
        # flow to that browser before sending it on to the network).
        self.start_url = start_url
        self.on_oauth_step: list[Callable[[str, str, LoginStep], Awaitable[None]]] = []
        # Data residency (bridge.compliance.residency), when on: why an account of a
        # (network, workspace or None before the login says) may not be linked, or None.
        self.refuse_network: Callable[[str, str | None, str], str | None] | None = None
        self._flow_key: bytes | None = None
        # With several workers (core/workers.py): this worker's id, and how to run a call
        # on another (worker, what, args) -> answer. A network whose half-done login lives
        # in the process that began it (`Connector.login_in_process`) has each of its steps
        # handed to that worker.
        self.worker_id: str | None = None
        self.call_worker: Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any]]
                                   ] | None = None

    def networks(self) -> dict[str, list[str]]:
        return {name: c.login_flows() for name, c in sorted(self.connectors.items())}

    def _connector(self, network: str) -> Connector:
        connector = self.connectors.get(network)
        if connector is None:
            known = ", ".join(sorted(self.connectors)) or "none"
            raise LinkRefused(f'"{network}" is not a network this bridge runs (running: '
                              f"{known}).")
        return connector

    async def start(self, account_id: str, network: str, identifier: str | None,
                    profile: str, requester: str | None = None) -> tuple[str, LoginStep]:
        """`requester`: the Matrix user asking, as the homeserver proved it (the bot's
        sender), for logins a network offers only to that user."""
        connector = self._connector(network)
        profile_row = await self.storage.profiles.by_name(account_id, profile)
        if profile_row is None:
            raise LinkRefused(f'You have no profile called "{profile}".')
        if self.refuse_network is not None and (refusal := self.refuse_network(
                network, None, f"an account on {network}")):
            raise LinkRefused(refusal)  # the whole network is declared elsewhere
        await self._refuse_without_mfa(account_id, network, identifier)
        # Credentials of consents never given are not kept longer than the flow lived.
        await self.vault.destroy_older(f"{_PENDING}%", int(time.time() * 1000) - FLOW_TTL * 1000)
        if connector.uses_oauth:
            return await self._start_oauth(account_id, connector, profile_row.name)
        try:
            step = await connector.begin_login_for(identifier, requester)
        except LoginFailed as e:
            raise LinkRefused(str(e)) from e
        flow_id = await self.storage.one_time.issue(
            "link_flow", FLOW_TTL, account_id=account_id,
            payload=self._flow_payload(connector, profile_row.name, step))
        return flow_id, step

    def _flow_payload(self, connector: Connector, profile: str, step: LoginStep
                      ) -> dict[str, Any]:
        payload = {"network": connector.network, "profile": profile, "state": step.state}
        if connector.login_in_process and self.worker_id is not None:
            payload["worker"] = self.worker_id  # the login's next step is answered there
        return payload

    # ---- OAuth 2.0 networks: state + PKCE, exact redirect URI -----------------------------

    async def _derived(self, label: str, state: str) -> str:
        """A value derived from the state with a key sealed in the vault: the PKCE verifier,
        the id of the step after the callback. Nothing secret about the flow is stored."""
        if self._flow_key is None:
            self._flow_key = await link_flow_key(self.vault)
        digest = hmac.new(self._flow_key, f"link-{label}\0{state}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()

    async def _pkce_verifier(self, state: str) -> str:
        return await self._derived("pkce", state)

    async def after_oauth(self, account_id: str, flow_id: str
                          ) -> tuple[str, LoginStep] | None:
        """For API clients: the step that followed the browser's return to the callback
        (MFA or consent), found from the OAuth flow's id; None while the browser has not come
        back (or the step was answered already)."""
        next_id = await self._derived("next", await self._derived("state", flow_id))
        flow = await self.storage.one_time.peek("link_flow", next_id)
        if flow is None or flow.account_id != account_id or "step" not in flow.payload:
            return None
        shown = flow.payload["step"]
        return next_id, LoginStep(message=shown["message"],
                                  fields=[Field(shown["field"], shown["label"])])

    async def _authorisation(self, connector: Connector, state: str) -> LoginStep:
        verifier = await self._pkce_verifier(state)
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        try:
            return await connector.begin_oauth(state, challenge,
                                               self.callback_url(connector.network))
        except LoginFailed as e:
            raise LinkRefused(str(e)) from e

    async def _start_oauth(self, account_id: str, connector: Connector, profile: str
                           ) -> tuple[str, LoginStep]:
        """The person gets a link to the bridge's start page, not to the network: the flow
        is bound to the browser that opens it there (`open_oauth`), so a network account
        authorised in any other browser (a victim's, sent the network's page by someone
        else) is never linked into the account that started the flow. The start link's
        value is the flow's id; the OAuth state is derived from it."""
        start = secrets.token_urlsafe(32)
        # Asked now so a network that is not set up says so at once, in the room.
        step = await self._authorisation(connector, await self._derived("state", start))
        await self.storage.one_time.issue(
            "link_start", FLOW_TTL, account_id=account_id, value=start,
            payload={"network": connector.network, "profile": profile})
        url = f"{self.start_url(connector.network)}?flow={start}"
        return start, attrs.evolve(step, url=url, message=(
            f"{step.message} Open it in your own browser: the first page shows the RelayForge "
            "account it links to."))

    async def oauth_start_target(self, network: str, start: str) -> tuple[str, str] | None:
        """(account id, profile) an OAuth start link links into, to show before anything
        happens; None if the link is unknown, used or expired."""
        record = await self.storage.one_time.peek("link_start", start) if start else None
        if record is None or record.account_id is None or (
                record.payload.get("network") != network):
            return None
        return record.account_id, record.payload["profile"]

    async def open_oauth(self, network: str, start: str, browser: str) -> str:
        """The person confirmed the start page in their browser: the flow is bound to that
        browser, and the network's authorisation URL is returned to send it to."""
        if await self.oauth_start_target(network, start) is None:
            raise LinkRefused(_UNKNOWN_LINK.format(network=network))
        connector = self._connector(network)
        record = await self.storage.one_time.consume("link_start", start)
        if record is None or record.account_id is None:
            raise LinkRefused(_UNKNOWN_LINK.format(network=network))
        state = await self._derived("state", start)
        step = await self._authorisation(connector, state)
        await self.storage.one_time.issue(
            "link_flow", FLOW_TTL, account_id=record.account_id, value=state, browser=browser,
            payload={"network": network, "profile": record.payload["profile"],
                     "state": step.state, "oauth": True})
        assert step.url is not None
        return step.url

    async def oauth_callback(self, network: str, state: str, code: str | None,
                             error: str | None, browser: str) -> tuple[str, LoginStep]:
        """The browser came back from the network's authorisation page. Exchanges the code,
        verifies the account, and hands the next step (MFA or consent) to the person.
        Returns (account id, that step). Only the browser that opened the start link gets
        here; from any other the state is refused and stays good for the right one."""
        flow = await self.storage.one_time.consume("link_flow", state, browser=browser)
        if flow is None or not flow.payload.get("oauth") or flow.payload["network"] != network:
            raise LinkRefused(_UNKNOWN_LINK.format(network=network))
        assert flow.account_id is not None
        if error or not code:
            raise LinkRefused(f"{network} did not authorise the bridge ({error or 'no code'}). "
                              "Nothing was linked.")
        connector = self._connector(network)
        try:
            result = await connector.continue_login(flow.payload["state"], {
                "code": code, "code_verifier": await self._pkce_verifier(state),
                "redirect_uri": self.callback_url(network)})
        except LoginFailed as e:
            raise LinkRefused(str(e)) from e
        if not isinstance(result, LinkedAccount):
            raise LinkRefused(f"{network} asked for more than an OAuth login can answer.")
        flow_id, step = await self._ask_consent(flow.account_id, network,
                                                flow.payload["profile"], result,
                                                await self._derived("next", state))
        for hook in self.on_oauth_step:
            await hook(flow.account_id, flow_id, step)
        return flow.account_id, step

    async def submit(self, account_id: str, flow_id: str, answers: dict[str, str],
                     actor: str) -> tuple[str, LoginStep] | LinkDone:
        """The next step (with its flow id), or the finished link."""
        if self.call_worker is not None and self.worker_id is not None:
            # Read, not taken: the worker that holds the login takes it (once).
            seen = await self.storage.one_time.peek("link_flow", flow_id)
            worker = seen.payload.get("worker") if seen is not None else None
            if (seen is not None and seen.account_id == account_id and worker
                    and worker != self.worker_id):
                return await self._submit_on(str(worker), seen.payload, account_id, flow_id,
                                             answers, actor)
        flow = await self.storage.one_time.consume("link_flow", flow_id)
        if flow is None or flow.account_id != account_id:
            raise LinkRefused("This linking flow expired or is not yours: start again with "
                              '"link".')
        network, profile = flow.payload["network"], flow.payload["profile"]
        if "consent" in flow.payload:
            return await self._consented(account_id, flow_id, flow.payload, answers, actor)
        if "mfa" in flow.payload:
            return await self._mfa_answered(account_id, flow.payload, answers, actor)
        connector = self._connector(network)
        try:
            result = await connector.continue_login(flow.payload["state"], answers)
        except LoginFailed as e:
            raise LinkRefused(str(e)) from e
        if isinstance(result, LoginStep):
            next_id = await self.storage.one_time.issue(
                "link_flow", FLOW_TTL, account_id=account_id,
                payload=self._flow_payload(connector, profile, result))
            return next_id, result
        return await self._ask_consent(account_id, network, profile, result)

    # ---- a login held by another worker ----------------------------------------------------

    async def _submit_on(self, worker: str, payload: dict[str, Any], account_id: str,
                         flow_id: str, answers: dict[str, str], actor: str
                         ) -> tuple[str, LoginStep] | LinkDone:
        """Hand the step to the worker holding the login (the answers sealed on the way) and
        give its outcome as if it were ours."""
        assert self.call_worker is not None
        network = payload.get("network", "")
        try:
            answer = await self.call_worker(worker, "link.submit", {
                "account": account_id, "flow": flow_id, "answers": answers, "actor": actor})
        except CallFailed as e:
            raise LinkRefused(
                f"This {network} login is held by another bridge worker ({worker}), which "
                f"{e}. Start again with \"link {network}\". Nothing was stored.") from e
        if "refused" in answer:
            raise LinkRefused(str(answer["refused"]))
        if "persona" in answer:
            persona = await self.storage.personas.get(str(answer["persona"]))
            if persona is None:
                raise LinkRefused(f"The {network} account was linked but is gone again.")
            return LinkDone(persona, [str(check) for check in answer.get("verified", [])])
        if "flow" in answer and isinstance(answer.get("step"), dict):
            shown = answer["step"]
            return str(answer["flow"]), LoginStep(**{
                **shown, "fields": [Field(**field) for field in shown.get("fields", [])]})
        raise LinkRefused(f"The bridge worker holding this {network} login ({worker}) "
                          f"{answer.get('failed', 'gave no answer')}. Start again with "
                          f"\"link {network}\".")

    async def submit_here(self, args: dict[str, Any]) -> dict[str, Any]:
        """`submit` handed here by another worker (this one holds the login): its outcome."""
        answers = args.get("answers")
        if not isinstance(answers, dict):
            return {"refused": "That login step had no answer."}
        try:
            result = await self.submit(str(args["account"]), str(args["flow"]),
                                       {str(k): str(v) for k, v in answers.items()},
                                       str(args["actor"]))
        except LinkRefused as e:
            return {"refused": str(e)}
        if isinstance(result, LinkDone):
            return {"persona": result.persona.id, "verified": result.verified}
        next_id, step = result
        return {"flow": next_id, "step": attrs.asdict(step)}

    # ---- MFA before high-risk accounts -----------------------------------------------------

    async def _refuse_without_mfa(self, account_id: str, network: str,
                                  identifier: str | None) -> None:
        """When the whole network is high-risk, someone without MFA learns it before typing
        a password."""
        reason = self.policy.high_risk_reason(network, []) if self.policy else None
        if reason and self.mfa and await self.mfa.missing_check(account_id) == SETUP_HINT:
            raise LinkRefused(f"Linking {identifier or 'an account'} on {network} needs "
                              f"multi-factor authentication ({reason}): {SETUP_HINT}, then "
                              "link again.")

    async def _ask_consent(self, account_id: str, network: str, profile: str,
                           linked: LinkedAccount, flow_value: str | None = None
                           ) -> tuple[str, LoginStep]:
        """Verified. A high-risk account first needs a fresh MFA check; then consent. The
        credentials wait sealed in the vault meanwhile, never in the flow."""
        reason = (self.policy.high_risk_reason(network, linked.risk_markers)
                  if self.policy else None)
        missing = await self.mfa.missing_check(account_id) if reason and self.mfa else None
        who = f"{linked.external_user_id} on {network}"
        connector = self.connectors.get(network)
        if self.refuse_network is not None and connector is not None and (
                refusal := self.refuse_network(
                    network, connector.workspace_of(linked.external_user_id), who)):
            await self._discard(network, dict(linked.credentials))
            raise LinkRefused(refusal)
        if missing == SETUP_HINT:
            raise LinkRefused(f"Linking {who} needs multi-factor authentication ({reason}): "
                              f"{SETUP_HINT}, then link again. Nothing was stored.")
        pending = f"{_PENDING}{secrets.token_urlsafe(12)}"
        profile_row = await self.storage.profiles.by_name(account_id, profile)
        assert profile_row is not None
        for field, secret in linked.credentials.items():
            await self.vault.seal(profile_row.id, pending, field, secret)
        payload = {"network": network, "profile": profile, "pending": pending,
                   "fields": sorted(linked.credentials),
                   "external_user_id": linked.external_user_id,
                   "display_name": linked.display_name, "scopes": linked.scopes,
                   "verified": linked.verified, "avatar_hash": linked.avatar_hash}
        if missing is not None:
            return await self._mfa_step(account_id, payload, (
                f"Linking {who} needs a fresh MFA check ({reason}): {VERIFY_HINT}. Send the "
                "6-digit code from your authenticator app as your next message."), flow_value)
        return await self._consent_step(account_id, payload, flow_value)

    async def _issue_step(self, account_id: str, payload: dict, step: LoginStep,
                          value: str | None) -> tuple[str, LoginStep]:
        """Keep the flow (the step's words too, so a client that was away can be shown it
        again; never a secret) and return its single-use id."""
        field = step.fields[0]
        flow_id = await self.storage.one_time.issue(
            "link_flow", FLOW_TTL, account_id=account_id, value=value, payload={
                **payload, "step": {"message": step.message, "field": field.name,
                                    "label": field.label}})
        return flow_id, step

    async def _mfa_step(self, account_id: str, payload: dict, message: str,
                        value: str | None = None) -> tuple[str, LoginStep]:
        return await self._issue_step(account_id, {**payload, "mfa": True}, LoginStep(
            message=message, fields=[
                Field("mfa_code", "the 6-digit code from your authenticator app")]), value)

    async def _mfa_answered(self, account_id: str, payload: dict, answers: dict[str, str],
                            actor: str) -> tuple[str, LoginStep]:
        assert self.mfa is not None
        # People type what the message told them: "mfa verify 123456" is as good as the code.
        code = answers.get("mfa_code", "").strip()
        code = code[len("mfa verify"):] if code.lower().startswith("mfa verify") else code
        try:
            await self.mfa.verify(account_id, code, actor)
        except MfaRefused as e:
            if await self.mfa.locked(account_id):
                profile_row = await self.storage.profiles.by_name(account_id,
                                                                  payload["profile"])
                if profile_row is not None:
                    await self.vault.destroy(profile_row.id, payload["pending"])
                raise LinkRefused(f"{e} Nothing was stored.") from e
            return await self._mfa_step(account_id, {k: v for k, v in payload.items()
                                                     if k != "step"},
                                        f"{e} Send the code as your next message.")
        return await self._consent_step(account_id, {k: v for k, v in payload.items()
                                                     if k not in ("mfa", "step")})

    def _scopes_in_words(self, network: str, scopes: list[str]) -> str:
        connector = self.connectors.get(network)
        words = connector.describe_scopes(scopes) if connector else scopes
        return "; ".join(words) or "none"

    async def _consent_step(self, account_id: str, payload: dict, value: str | None = None
                            ) -> tuple[str, LoginStep]:
        """Say exactly what the bridge will do with the account, and wait for yes."""
        network, profile = payload["network"], payload["profile"]
        who = payload["display_name"] or payload["external_user_id"]
        owners = ", ".join(await self.storage.accounts.matrix_users(account_id)) or account_id
        message = (
            f"Verified {payload['external_user_id']} on {network}:\n"
            + "".join(f"  - {check}\n" for check in payload["verified"])
            + f"If you agree, RelayForge will, as {who} on {network} (profile {profile}):\n"
            "  - read the messages of the rooms you map and of your direct chats, to show them "
            "in Matrix;\n"
            "  - send, edit, delete and react there only when you do so in Matrix;\n"
            f"  - keep the credential sealed in its vault. Scopes: "
            f"{self._scopes_in_words(network, payload['scopes'])}.\n"
            f"It will be linked to the RelayForge account of {owners} ({account_id}).\n"
            "Reply yes to link the account, or no to cancel.")
        return await self._issue_step(account_id, {**payload, "consent": True}, LoginStep(
            message=message, fields=[Field("consent", "yes to link, no to cancel")]), value)

    async def _consented(self, account_id: str, flow_id: str, payload: dict,
                         answers: dict[str, str], actor: str) -> LinkDone:
        profile_row = await self.storage.profiles.by_name(account_id, payload["profile"])
        assert profile_row is not None
        credentials = {field: await self.vault.open_text(profile_row.id, payload["pending"],
                                                         field)
                       for field in payload["fields"]}
        await self.vault.destroy(profile_row.id, payload["pending"])
        if answers.get("consent", "").strip().lower() not in ("yes", "y"):
            await self._discard(payload["network"], credentials)
            raise LinkRefused("Not linked: you did not agree. The credential was destroyed.")
        linked = LinkedAccount(payload["external_user_id"], payload["display_name"],
                               payload["scopes"], credentials, payload["verified"],
                               avatar_hash=payload.get("avatar_hash"))
        return await self._finish(account_id, payload["network"], payload["profile"], linked,
                                  actor)

    async def _discard(self, network: str, credentials: dict[str, str]) -> None:
        """Consent refused: the network forgets the login too (a session it created there
        must not stay signed in). Best effort: the credential is destroyed either way."""
        connector = self.connectors.get(network)
        if connector is None:
            return
        try:
            await connector.discard_login(credentials)
        except Exception as e:  # never keeps the refusal from being said
            log.warning("%s could not discard a refused login: %s", network, type(e).__name__)

    async def _finish(self, account_id: str, network: str, profile: str,
                      linked: LinkedAccount, actor: str) -> LinkDone:
        existing = await self.storage.personas.by_external(network, linked.external_user_id)
        if existing is not None and await self._owned_by(existing, account_id):
            return await self._relinked(account_id, existing, linked, actor)
        try:
            persona = await self.accounts.add_persona(
                account_id, profile, platform=network,
                external_user_id=linked.external_user_id, display_name=linked.display_name,
                scopes=linked.scopes, actor=actor, avatar_hash=linked.avatar_hash)
        except IdentityError as e:
            raise LinkRefused(str(e)) from e
        # The verification ping just proved the credentials: that is their latest check.
        await self.storage.personas.set_checked(persona.id, avatar_hash=linked.avatar_hash)
        for field, secret in linked.credentials.items():
            await self.vault.seal(*persona.vault_ref, field, secret)
        await self.audit.append(AuditEvent.LINK, actor=actor, account=account_id,
                                profile=persona.profile_id, persona=persona.id,
                                details={"step": "verified", "checks": "; ".join(
                                    linked.verified)})
        await self.sessions.open(persona)
        return LinkDone(persona, linked.verified)

    async def _owned_by(self, persona: Persona, account_id: str) -> bool:
        return await self.storage.profiles.account_of(persona.profile_id) == account_id

    async def _relinked(self, account_id: str, persona: Persona, linked: LinkedAccount,
                        actor: str) -> LinkDone:
        """The person proved the account again (after a revoked token, a changed password):
        new credentials replace the old ones, the persona is active again, and what waited
        for it is sent."""
        # Sealing replaces each field in place: a crash half way leaves old or new, never none.
        for field, secret in linked.credentials.items():
            await self.vault.seal(*persona.vault_ref, field, secret)
        await self.storage.personas.set_status(persona.id, PersonaStatus.ACTIVE)
        await self.storage.personas.set_checked(persona.id, avatar_hash=linked.avatar_hash)
        persona.status = PersonaStatus.ACTIVE
        await self.audit.append(AuditEvent.LINK, actor=actor, account=account_id,
                                profile=persona.profile_id, persona=persona.id,
                                details={"step": "relinked", "checks": "; ".join(
                                    linked.verified)})
        await self.sessions.close(persona)  # the old session holds the old credentials
        await self.sessions.open(persona)
        for hook in self.on_relinked:
            await hook(persona.id)
        return LinkDone(persona, linked.verified)
