"""`forget-me`: a person's right to erasure.

In this order, so a crash part way can be finished by running it again:
1. every persona is revoked and unlinked by the same code the bot's `revoke` and `unlink`
   use (the network is told where it can be; the credentials are destroyed);
2. their audit records are pseudonymised: identifiers replaced by a random pseudonym, each
   record resealed so `audit verify` still passes (see `bridge.audit.log`);
3. the data keys of their profiles (and of their account, which seals their MFA secret)
   are destroyed with everything sealed under them: every ciphertext of theirs, in any
   copy of the database, can never be opened again;
4. their rows are deleted: account, sign-ins, profiles, rules, capabilities, agents, message
   maps of their messages and direct chats, queued sends, puppets of their personas.
A legal hold naming them refuses it, saying only that one applies.
"""

from __future__ import annotations

import json
import logging
import secrets

import attrs
from mautrix.types import UserID

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.audit_log import AuditRow
from ..db.persona import PersonaStatus
from ..db.personal_data import ErasurePlan, PersonalDataStore
from ..identity.accounts import Accounts
from ..identity.errors import IdentityError
from ..security.vault import Vault
from .holds import account_under_hold, matrix_user_under_hold
from .my_data import PersonIdentifiers, identifiers_of

log = logging.getLogger("relayforge.forget")
HOLD_APPLIES = ("A legal hold applies to your data, so it cannot be deleted now. Nothing was "
                "changed.")
# Shorter names and ids are replaced only where they are a whole value, not inside text.
_MIN_SUBSTRING = 3


class ForgetRefused(Exception):
    """Nothing was changed; the message says why."""


@attrs.frozen
class Forgotten:
    pseudonym: str
    personas: int
    audit_records: int
    rows_deleted: int
    data_keys: int


def _replacements(who: PersonIdentifiers, pseudonym: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for index, persona in enumerate(who.personas, 1):
        label = f"{pseudonym}-persona{index}"
        for weak in (persona.external_user_id, persona.display_name):
            if weak:
                labels[weak] = label
        labels[f"{persona.platform}:{persona.external_user_id}"] = f"{persona.platform}:{label}"
        labels[persona.id] = label
    for index, profile in enumerate(who.profiles, 1):
        labels[profile] = f"{pseudonym}-profile{index}"
    for ident in (*who.accounts, *who.matrix_users, *who.emails):
        labels[ident] = pseudonym
    return labels


def audit_rewriter(who: PersonIdentifiers, pseudonym: str):
    """The pseudonymised form of each record about `who` (None for everyone else's)."""
    labels = _replacements(who, pseudonym)
    # Longest first, so an id is never half replaced by a shorter one inside it.
    ordered = sorted(labels, key=len, reverse=True)

    def text(value: str | None) -> str | None:
        if value is None:
            return None
        if value in labels:
            return labels[value]
        for ident in ordered:
            if len(ident) >= _MIN_SUBSTRING and ident in value:
                value = value.replace(ident, labels[ident])
        return value

    def rewrite(row: AuditRow) -> AuditRow | None:
        if not who.concerns(row):
            return None
        details = {key: text(value) if isinstance(value, str) else value
                   for key, value in json.loads(row.details).items()}
        return attrs.evolve(
            row, actor=text(row.actor) or row.actor, account=text(row.account),
            profile=text(row.profile), persona=text(row.persona),
            details=json.dumps(details, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False))

    return rewrite


class Forgetting:
    def __init__(self, storage: Storage, accounts: Accounts, vault: Vault,
                 audit: AuditLog) -> None:
        self.storage = storage
        self.accounts = accounts
        self.vault = vault
        self.audit = audit

    async def refusal(self, account_id: str) -> str | None:
        """Why the person cannot be forgotten now (a legal hold, never which), or None."""
        who = await identifiers_of(self.storage, account_id)
        for account in who.accounts:
            if await account_under_hold(self.storage, account):
                return HOLD_APPLIES
        for mxid in who.matrix_users:
            if await matrix_user_under_hold(self.storage, mxid):
                return HOLD_APPLIES
        return None

    async def forget(self, account_id: str, *, actor: str) -> Forgotten:
        refusal = await self.refusal(account_id)
        if refusal is not None:
            raise ForgetRefused(refusal)
        who = await identifiers_of(self.storage, account_id)
        for persona in who.personas:
            try:
                if persona.status != PersonaStatus.REVOKED:
                    await self.accounts.set_persona_state(account_id, persona.id, "revoke",
                                                          actor=actor)
                await self.accounts.unlink_persona(account_id, persona.id, actor=actor)
            except IdentityError as e:  # already gone (a run that was cut short)
                log.info("Persona %s was already unlinked: %s", persona.id, e)
        ghosts = []
        for persona in who.personas:
            puppet = await self.storage.puppets.get(persona.platform, persona.external_user_id)
            if puppet is not None:
                ghosts.append(puppet.mxid)
        rooms = [room for mxid in who.matrix_users
                 if (room := await self.storage.management_rooms.get(UserID(mxid)))]
        pseudonym = f"forgotten-{secrets.token_hex(6)}"
        # The records the steps above wrote are pseudonymised too.
        records = await self.audit.pseudonymise(audit_rewriter(who, pseudonym))
        keys = 0
        for vault_profile in dict.fromkeys((*(p.vault_profile for p in who.personas),
                                            *who.profiles, *who.accounts)):
            keys += await self.vault.destroy_data_key(vault_profile)
        removed = await PersonalDataStore(self.storage.db).erase(ErasurePlan(
            accounts=(*who.accounts[1:], who.accounts[0]), profiles=who.profiles,
            personas=who.persona_ids, matrix_users=who.matrix_users,
            puppets=tuple((p.platform, p.external_user_id) for p in who.personas),
            ghosts=tuple(ghosts), rooms=tuple(rooms)))
        await self.audit.append(AuditEvent.FORGET, actor=pseudonym, account=pseudonym,
                                details={"personas": len(who.personas),
                                         "audit_records": records, "rows_deleted": removed,
                                         "vault_profiles_shredded": keys})
        log.info("Forgot a person (now %s): %d personas, %d audit records pseudonymised",
                 pseudonym, len(who.personas), records)
        return Forgotten(pseudonym, len(who.personas), records, removed, keys)
