"""Linking an account on a network: the flow every network shares.

The connector asks for what it needs step by step; the core keeps the flow (never a secret)
in the database, and when the connector has verified the account, records the persona, seals
its credentials in the vault and opens its session.
"""

from __future__ import annotations

import logging
import secrets
import time

import attrs

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.persona import Persona
from ..identity.accounts import Accounts
from ..identity.errors import IdentityError
from ..networks.base import Connector
from ..networks.login import Field, LinkedAccount, LoginFailed, LoginStep
from ..security.vault import Vault
from .sessions import PersonaSessions

log = logging.getLogger("relayforge.linking")
FLOW_TTL = 15 * 60


class LinkRefused(Exception):
    """Linking cannot go on; the message says why. Nothing was stored."""


@attrs.frozen
class LinkDone:
    persona: Persona
    verified: list[str]


class Linking:
    def __init__(self, storage: Storage, accounts: Accounts, vault: Vault, audit: AuditLog,
                 connectors: dict[str, Connector], sessions: PersonaSessions) -> None:
        self.storage = storage
        self.accounts = accounts
        self.vault = vault
        self.audit = audit
        self.connectors = connectors
        self.sessions = sessions

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
                    profile: str) -> tuple[str, LoginStep]:
        connector = self._connector(network)
        profile_row = await self.storage.profiles.by_name(account_id, profile)
        if profile_row is None:
            raise LinkRefused(f'You have no profile called "{profile}".')
        # Credentials of consents never given are not kept longer than the flow lived.
        await self.storage.db.execute(
            "DELETE FROM vault_secret WHERE persona LIKE 'pending_%' AND updated_at < $1",
            int(time.time() * 1000) - FLOW_TTL * 1000)
        try:
            step = await connector.begin_login(identifier)
        except LoginFailed as e:
            raise LinkRefused(str(e)) from e
        flow_id = await self.storage.one_time.issue(
            "link_flow", FLOW_TTL, account_id=account_id,
            payload={"network": network, "profile": profile_row.name, "state": step.state})
        return flow_id, step

    async def submit(self, account_id: str, flow_id: str, answers: dict[str, str],
                     actor: str) -> tuple[str, LoginStep] | LinkDone:
        """The next step (with its flow id), or the finished link."""
        flow = await self.storage.one_time.consume("link_flow", flow_id)
        if flow is None or flow.account_id != account_id:
            raise LinkRefused("This linking flow expired or is not yours: start again with "
                              '"link".')
        network, profile = flow.payload["network"], flow.payload["profile"]
        if "consent" in flow.payload:
            return await self._consented(account_id, flow_id, flow.payload, answers, actor)
        connector = self._connector(network)
        try:
            result = await connector.continue_login(flow.payload["state"], answers)
        except LoginFailed as e:
            raise LinkRefused(str(e)) from e
        if isinstance(result, LoginStep):
            next_id = await self.storage.one_time.issue(
                "link_flow", FLOW_TTL, account_id=account_id,
                payload={"network": network, "profile": profile, "state": result.state})
            return next_id, result
        return await self._ask_consent(account_id, network, profile, result)

    async def _ask_consent(self, account_id: str, network: str, profile: str,
                           linked: LinkedAccount) -> tuple[str, LoginStep]:
        """Verified: now say exactly what the bridge will do with the account, and wait for
        yes. The credentials wait sealed in the vault meanwhile, never in the flow."""
        pending = f"pending_{secrets.token_urlsafe(12)}"
        profile_row = await self.storage.profiles.by_name(account_id, profile)
        assert profile_row is not None
        for field, secret in linked.credentials.items():
            await self.vault.seal(profile_row.id, pending, field, secret)
        who = linked.display_name or linked.external_user_id
        message = (
            f"Verified {linked.external_user_id} on {network}:\n"
            + "".join(f"  - {check}\n" for check in linked.verified)
            + f"If you agree, RelayForge will, as {who} on {network} (profile {profile}):\n"
            "  - read the messages of the rooms you map and of your direct chats, to show them "
            "in Matrix;\n"
            "  - send, edit, delete and react there only when you do so in Matrix;\n"
            f"  - keep the credential sealed in its vault. Scopes: "
            f"{', '.join(linked.scopes) or 'none'}.\n"
            "Reply yes to link the account, or no to cancel.")
        flow_id = await self.storage.one_time.issue(
            "link_flow", FLOW_TTL, account_id=account_id,
            payload={"network": network, "profile": profile, "consent": True,
                     "pending": pending, "fields": sorted(linked.credentials),
                     "external_user_id": linked.external_user_id,
                     "display_name": linked.display_name, "scopes": linked.scopes,
                     "verified": linked.verified})
        return flow_id, LoginStep(message=message,
                                  fields=[Field("consent", "yes to link, no to cancel")])

    async def _consented(self, account_id: str, flow_id: str, payload: dict,
                         answers: dict[str, str], actor: str) -> LinkDone:
        profile_row = await self.storage.profiles.by_name(account_id, payload["profile"])
        assert profile_row is not None
        credentials = {field: await self.vault.open_text(profile_row.id, payload["pending"],
                                                         field)
                       for field in payload["fields"]}
        await self.vault.destroy(profile_row.id, payload["pending"])
        if answers.get("consent", "").strip().lower() not in ("yes", "y"):
            raise LinkRefused("Not linked: you did not agree. The credential was destroyed.")
        linked = LinkedAccount(payload["external_user_id"], payload["display_name"],
                               payload["scopes"], credentials, payload["verified"])
        return await self._finish(account_id, payload["network"], payload["profile"], linked,
                                  actor)

    async def _finish(self, account_id: str, network: str, profile: str,
                      linked: LinkedAccount, actor: str) -> LinkDone:
        try:
            persona = await self.accounts.add_persona(
                account_id, profile, platform=network,
                external_user_id=linked.external_user_id, display_name=linked.display_name,
                scopes=linked.scopes, actor=actor)
        except IdentityError as e:
            raise LinkRefused(str(e)) from e
        for field, secret in linked.credentials.items():
            await self.vault.seal(*persona.vault_ref, field, secret)
        await self.audit.append(AuditEvent.LINK, actor=actor, account=account_id,
                                profile=persona.profile_id, persona=persona.id,
                                details={"step": "verified", "checks": "; ".join(
                                    linked.verified)})
        await self.sessions.open(persona)
        return LinkDone(persona, linked.verified)
