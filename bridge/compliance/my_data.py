"""`my-data`: everything the bridge holds about a person, as one JSON document.

The same document answers the bot command (as a file in the management room) and the
provisioning API's `GET /my-data`. Personas appear by their descriptors: no credential is
ever opened for it. Their audit records are the ones naming their account, Matrix users,
profiles or personas.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import attrs

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.audit_log import AuditRow
from ..db.persona import Persona
from ..db.personal_data import PersonalDataStore


def _iso(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms else None


@attrs.frozen
class PersonIdentifiers:
    """What identifies one person in the bridge's tables and in audit records."""

    accounts: tuple[str, ...]  # their account first, then accounts merged into it
    matrix_users: tuple[str, ...]
    profiles: tuple[str, ...]
    personas: tuple[Persona, ...]
    emails: tuple[str, ...] = ()

    @property
    def persona_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.personas)

    def strong(self) -> set[str]:
        """Identifiers nobody else's record carries by chance (ids, Matrix IDs, emails)."""
        return {*self.accounts, *self.matrix_users, *self.profiles, *self.persona_ids,
                *self.emails, *(f"{p.platform}:{p.external_user_id}" for p in self.personas)}

    def concerns(self, row: AuditRow) -> bool:
        """Whether an audit record is about this person."""
        who = {*self.accounts, *self.matrix_users}
        if row.actor in who or row.account in who or row.profile in self.profiles or (
                row.persona in self.persona_ids):
            return True
        return any(ident in row.details for ident in self.strong())


async def identifiers_of(storage: Storage, account_id: str) -> PersonIdentifiers:
    accounts = [account_id, *await PersonalDataStore(storage.db).merged_into(account_id)]
    matrix_users: list[str] = []
    profiles: list[str] = []
    personas: list[Persona] = []
    emails: list[str] = []
    for account in accounts:
        matrix_users += await storage.accounts.matrix_users(account)
        emails += [i.email for i in await storage.identities.for_account(account) if i.email]
        for profile in await storage.profiles.for_account(account):
            profiles.append(profile.id)
            personas += await storage.personas.for_profile(profile.id)
    return PersonIdentifiers(tuple(accounts), tuple(matrix_users), tuple(profiles),
                             tuple(personas), tuple(emails))


def _audit_json(row: AuditRow) -> dict[str, Any]:
    return {"seq": row.seq, "ts": row.ts, "event": row.event_type, "actor": row.actor,
            "account": row.account, "profile": row.profile, "persona": row.persona,
            "details": json.loads(row.details)}


class PersonalData:
    def __init__(self, storage: Storage, audit: AuditLog) -> None:
        self.storage = storage
        self.audit = audit

    async def export(self, account_id: str, *, actor: str) -> dict[str, Any]:
        """The person's data as JSON-ready values; the export itself is audited."""
        store = self.storage
        account = await store.accounts.get(account_id)
        if account is None:
            raise LookupError(f"There is no account {account_id}.")
        who = await identifiers_of(store, account_id)
        profiles = []
        for profile in await store.profiles.for_account(account_id):
            profiles.append({
                "id": profile.id, "name": profile.name, "space": profile.space_mxid,
                "created_at": _iso(profile.created_at),
                "personas": [{"id": p.id, "status": p.status.value,
                              "descriptor": p.descriptor()}
                             for p in await store.personas.for_profile(profile.id)]})
        names = {p["id"]: p["name"] for p in profiles}
        mfa = await store.mfa.get(account_id)
        audit = [_audit_json(row) async for row in store.audit_log.scan() if who.concerns(row)]
        document = {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "account": {
                "id": account.id, "status": account.status.value, "credits": account.credits,
                "created_at": _iso(account.created_at), "merged_accounts": list(who.accounts[1:]),
                "matrix_users": await store.accounts.matrix_users(account_id),
                "sign_in_methods": [
                    {"provider": i.provider_id, "issuer": i.issuer, "subject": i.subject,
                     "email": i.email, "email_verified": i.email_verified,
                     "added": i.added_how, "added_at": _iso(i.added_at)}
                    for i in await store.identities.for_account(account_id)],
                "mfa": {"enrolled": bool(mfa and mfa.enrolled_at),
                        "enrolled_at": _iso(mfa.enrolled_at) if mfa else None},
            },
            "profiles": profiles,
            "rules": [{"id": r.id, "profile": names.get(r.profile_id, r.profile_id),
                       "network": r.network, "remote": r.remote, "target_room": r.target_room,
                       "inbound_only": r.inbound_only, "relay": r.relay,
                       "created_at": _iso(r.created_at)}
                      for r in await store.rules.for_account(account_id)],
            "capabilities": [{"id": c.id, "profile": names.get(c.profile_id, c.profile_id),
                              "persona": c.persona_id, "effect": c.effect,
                              "actions": list(c.actions), "network": c.network,
                              "workspace": c.workspace, "channel": c.channel,
                              "agent": c.agent, "created_at": _iso(c.created_at)}
                             for c in await store.capabilities.for_account(account_id)],
            "agents": [{"id": g.id, "name": g.name, "client": g.client_id,
                        "actions": list(g.actions), "created_at": _iso(g.created_at),
                        "revoked_at": _iso(g.revoked_at)}
                       for g in await store.agents.grants(account_id)],
            "audit": audit,
        }
        await self.audit.append(AuditEvent.EXPORT, actor=actor, account=account_id,
                                details={"what": "my_data", "audit_records": len(audit)})
        return document
