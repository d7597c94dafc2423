"""The account layer: who a person is, their profiles and what is linked to them."""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.account import Account
from ..db.login_identity import LoginIdentity
from ..db.persona import Persona, PersonaStatus
from ..db.profile import Profile
from .errors import IdentityError

_PROFILE_NAME_MAX = 40


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(12)}"


class Credentials(Protocol):
    """What the identity layer needs from the vault (`security.vault.Vault`): destroying
    what is sealed for a persona when it is revoked."""

    async def revoke_persona(self, profile: str, persona: str) -> int: ...


class Spaces(Protocol):
    """What the identity layer needs from Matrix: a space per profile."""

    async def create_space(self, name: str, invite: list[str]) -> str: ...

    async def rename_space(self, space_mxid: str, name: str) -> None: ...

    def make_later(self, account_id: str, person: str | None) -> None:
        """A new account's profile spaces, after the first answer (owed in the database)."""


@attrs.frozen
class ProfileView:
    profile: Profile
    personas: list[Persona]


@attrs.frozen
class AccountView:
    account: Account
    matrix_users: list[str]
    identities: list[LoginIdentity]
    profiles: list[ProfileView]


def check_profile_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > _PROFILE_NAME_MAX or any(c in name for c in "\n\t"):
        raise IdentityError(f"A profile name must be 1-{_PROFILE_NAME_MAX} characters on one "
                            "line.")
    return name


class Accounts:
    def __init__(self, storage: Storage, audit: AuditLog, vault: Credentials,
                 default_profiles: list[str], spaces: Spaces | None = None) -> None:
        self.storage = storage
        self.audit = audit
        self.vault = vault
        self.default_profiles = default_profiles
        self.spaces = spaces
        self._creating: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # identity.max_profiles: each profile is a Matrix space, so the count is bounded.
        self.max_profiles = 20
        self._profile_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Called with a persona after it was unlinked (its network session must end).
        self.on_unlink: list[Callable[[Persona], Awaitable[None]]] = []
        # Called before a persona's credentials are destroyed (revoke, unlink), while they can
        # still be used to tell the network to revoke the bridge's access.
        self.before_destroy: list[Callable[[Persona], Awaitable[None]]] = []
        # Called after a persona was paused, resumed or revoked (sessions follow).
        self.on_state_change: list[Callable[[Persona], Awaitable[None]]] = []
        # Called with (account id, persona) before a persona is resumed; a text returned
        # refuses, saying why (a persona stopped for re-authentication needs a fresh MFA check).
        self.resume_checks: list[Callable[[str, Persona], Awaitable[str | None]]] = []

    # ---- accounts --------------------------------------------------------------------------

    async def for_matrix_user(self, mxid: str) -> Account:
        """The person's account, created (with the default profiles) the first time."""
        account = await self.storage.accounts.by_mxid(mxid)
        if account is not None:
            return account
        # The first DM and the first command can arrive together: make one account.
        async with self._creating[mxid]:
            account = await self.storage.accounts.by_mxid(mxid)
            if account is None:
                account = await self.create_account(actor=mxid, matrix_user=mxid)
        self._creating.pop(mxid, None)
        return account

    async def create_account(self, *, actor: str, matrix_user: str | None = None) -> Account:
        """A new account with the default profiles. The Matrix user is attached last, so
        nobody finds the account before its profiles exist."""
        account = await self.storage.accounts.create(new_id("acct"))
        try:
            # Only the rows: the spaces are made after the person's first answer (making
            # them first cost the first command a homeserver round trip per profile).
            for name in self.default_profiles:
                await self._add_profile(account.id, check_profile_name(name))
            if matrix_user and not await self.storage.accounts.add_matrix_user(account.id,
                                                                               matrix_user):
                raise IdentityError(f"{matrix_user} already belongs to another account.")
        except BaseException:
            # A refused or failed creation leaves no account (nor its profiles) behind.
            await self._forget_new_account(account.id)
            raise
        await self.audit.append(AuditEvent.ACCOUNT_CREATED, actor=actor, account=account.id,
                                details={"matrix_user": matrix_user})
        if self.spaces:
            self.spaces.make_later(account.id, matrix_user)
        return account

    async def _forget_new_account(self, account_id: str) -> None:
        for profile in await self.storage.profiles.for_account(account_id):
            await self.storage.profiles.delete(profile.id)
        await self.storage.accounts.delete(account_id)

    async def find(self, query: str) -> list[str]:
        """Support lookup: accounts by MXID, by sign-in email, or by account id."""
        query = query.strip()
        if not query:
            return []
        if query.startswith("@"):
            account = await self.storage.accounts.by_mxid(query)
            return [account.id] if account else []
        if "@" in query:
            return await self.storage.identities.accounts_with_email(query)
        account = await self.storage.accounts.get(query)
        return [account.id] if account else []

    async def view(self, account_id: str) -> AccountView:
        store = self.storage
        account = await store.accounts.get(account_id)
        if account is None:
            raise IdentityError(f"There is no account {account_id}.")
        profiles = [ProfileView(p, await store.personas.for_profile(p.id))
                    for p in await store.profiles.for_account(account_id)]
        return AccountView(account, await store.accounts.matrix_users(account_id),
                           await store.identities.for_account(account_id), profiles)

    # ---- profiles --------------------------------------------------------------------------

    async def create_profile(self, account_id: str, name: str, *, actor: str,
                             members: list[str] | None = None) -> Profile:
        name = check_profile_name(name)
        # One at a time per account, so parallel requests cannot pass the cap together.
        async with self._profile_locks[account_id]:
            profile = await self._add_profile(account_id, name)
        if self.spaces:
            if members is None:
                members = await self.storage.accounts.matrix_users(account_id)
            try:
                profile.space_mxid = await self.spaces.create_space(name, members)
            except BaseException:
                # No profile without its space is left behind.
                await self.storage.profiles.delete(profile.id)
                raise
            await self.storage.profiles.set_space(profile.id, profile.space_mxid)
        return profile

    async def _add_profile(self, account_id: str, name: str) -> Profile:
        """The profile's row, after the checks (before any space exists)."""
        if await self.storage.profiles.by_name(account_id, name):
            raise IdentityError(f'You already have a profile called "{name}".')
        cap = max(self.max_profiles, len(self.default_profiles))
        if len(await self.storage.profiles.for_account(account_id)) >= cap:
            raise IdentityError(f"An account has at most {cap} profiles "
                                "(identity.max_profiles); delete one first.")
        profile = Profile(new_id("prof"), account_id, name, None)
        if not await self.storage.profiles.add(profile):
            raise IdentityError(f'You already have a profile called "{name}".')
        return profile

    async def _profile(self, account_id: str, name: str) -> Profile:
        profile = await self.storage.profiles.by_name(account_id, name)
        if profile is None:
            names = ", ".join(p.name for p in await self.storage.profiles.for_account(account_id))
            raise IdentityError(f'You have no profile called "{name}". Your profiles: {names}.')
        return profile

    async def rename_profile(self, account_id: str, old: str, new: str, *, actor: str) -> None:
        profile = await self._profile(account_id, old)
        new = check_profile_name(new)
        existing = await self.storage.profiles.by_name(account_id, new)
        if existing and existing.id != profile.id:
            raise IdentityError(f'You already have a profile called "{new}".')
        await self.storage.profiles.rename(profile.id, new)
        if self.spaces and profile.space_mxid:
            await self.spaces.rename_space(profile.space_mxid, new)

    async def delete_profile(self, account_id: str, name: str, *, actor: str) -> None:
        profile = await self._profile(account_id, name)
        personas = await self.storage.personas.for_profile(profile.id)
        if personas:
            raise IdentityError(
                f'The profile "{profile.name}" still has {len(personas)} linked account(s). '
                "Unlink them first.")
        if len(await self.storage.profiles.for_account(account_id)) == 1:
            raise IdentityError("You cannot delete your only profile.")
        await self.storage.profiles.delete(profile.id)

    # ---- personas --------------------------------------------------------------------------

    async def add_persona(self, account_id: str, profile_name: str, *, platform: str,
                          external_user_id: str, display_name: str | None, scopes: list[str],
                          actor: str, avatar_hash: str | None = None) -> Persona:
        """Record a linked account. Callers prove ownership first (OAuth, QR, password)."""
        profile = await self._profile(account_id, profile_name)
        persona = Persona(new_id("per"), profile.id, profile.id, platform, external_user_id,
                          display_name, avatar_hash, scopes, None, PersonaStatus.ACTIVE)
        if not await self.storage.personas.add(persona):
            raise IdentityError(f"That {platform} account is already linked to a RelayForge "
                                "account. Unlink it there first.")
        await self.audit.append(AuditEvent.LINK, actor=actor, account=account_id,
                                profile=profile.id, persona=persona.id,
                                details={"platform": platform, "external_user_id":
                                         external_user_id})
        return persona

    async def find_persona(self, account_id: str, ref: str) -> Persona:
        """A persona of this account by id, or by platform:external_user_id."""
        view = await self.view(account_id)
        for profile in view.profiles:
            for persona in profile.personas:
                if ref in (persona.id, f"{persona.platform}:{persona.external_user_id}"):
                    return persona
        raise IdentityError(f'You have no linked account "{ref}". See "account".')

    async def unlink_persona(self, account_id: str, ref: str, *, actor: str) -> Persona:
        """Forget a linked account and destroy every credential held for it."""
        persona = await self.find_persona(account_id, ref)
        for hook in self.before_destroy:
            await hook(persona)
        await self.vault.revoke_persona(*persona.vault_ref)
        await self.storage.personas.delete(persona.id)
        for hook in self.on_unlink:
            await hook(persona)
        await self.audit.append(AuditEvent.UNLINK, actor=actor, account=account_id,
                                profile=persona.profile_id, persona=persona.id,
                                details={"platform": persona.platform})
        return persona

    async def set_persona_state(self, account_id: str, ref: str, action: str, *,
                                actor: str) -> Persona:
        """pause, resume or revoke a linked account, at once. Revoking destroys its
        credentials; pausing keeps them but stops the session; both stop outbound."""
        persona = await self.find_persona(account_id, ref)
        targets = {"pause": PersonaStatus.PAUSED, "resume": PersonaStatus.ACTIVE,
                   "revoke": PersonaStatus.REVOKED}
        if persona.status == PersonaStatus.REVOKED and action != "revoke":
            raise IdentityError(f"{persona.platform}:{persona.external_user_id} was revoked; "
                                "link it again to use it.")
        if action == "resume" and persona.status == PersonaStatus.ACTIVE:
            raise IdentityError("That account is not paused.")
        if action == "resume" and persona.status == PersonaStatus.READ_ONLY:
            raise IdentityError(f"{persona.platform} refused the bridge's access to that account: "
                                f"link it again with relink {persona.platform}:"
                                f"{persona.external_user_id}")
        if action == "resume":
            for check in self.resume_checks:
                if (refusal := await check(account_id, persona)) is not None:
                    raise IdentityError(refusal)
        await self.storage.personas.set_status(persona.id, targets[action])
        persona.status = targets[action]
        if action == "revoke":
            for hook in self.before_destroy:
                await hook(persona)
            await self.vault.revoke_persona(*persona.vault_ref)
        for hook in self.on_state_change:
            await hook(persona)
        await self.audit.append(
            {"pause": AuditEvent.PAUSE, "resume": AuditEvent.RESUME,
             "revoke": AuditEvent.REVOKE}[action],
            actor=actor, account=account_id, profile=persona.profile_id, persona=persona.id,
            details={"platform": persona.platform})
        return persona

    # ---- sign-in methods -------------------------------------------------------------------

    async def sign_in_methods(self, account_id: str) -> int:
        return (len(await self.storage.identities.for_account(account_id))
                + len(await self.storage.accounts.matrix_users(account_id)))

    async def remove_identity(self, account_id: str, issuer: str, subject: str, *,
                              actor: str) -> None:
        identity = await self.storage.identities.get(issuer, subject)
        if identity is None or identity.account_id != account_id:
            raise IdentityError("That sign-in method is not linked to your account.")
        if await self.sign_in_methods(account_id) <= 1:
            raise IdentityError("That is your account's last way to sign in; add another one "
                                "before removing it.")
        await self.storage.identities.remove(issuer, subject)
        await self.audit.append(AuditEvent.UNLINK, actor=actor, account=account_id,
                                details={"provider": identity.provider_id,
                                         "issuer": issuer})
