"""Opening the database and bundling the per-table stores."""

from __future__ import annotations

import attrs
from mautrix.appservice.state_store.asyncpg import PgASStateStore
from mautrix.util.async_db import Database

from .account import AccountStore
from .account_merge import MergeStore
from .audit_log import AuditLogStore
from .capability import CapabilityStore
from .first_send import FirstSendStore
from .impersonation_jti import JtiStore
from .login_identity import LoginIdentityStore
from .management_room import ManagementRoomStore
from .mapping_rule import MappingRuleStore
from .message import MessageStore
from .mfa_factor import MfaFactorStore
from .one_time_secret import OneTimeSecretStore
from .outbound import OutboundStore
from .persona import PersonaStore
from .portal import PortalStore
from .profile import ProfileStore
from .puppet import PuppetStore
from .security_failure import SecurityFailureStore
from .session_network import SessionNetworkStore
from .transaction import TransactionStore
from .upgrade import upgrade_table
from .vault_key import VaultKeyStore
from .vault_secret import VaultSecretStore


@attrs.define
class Storage:
    """Every table the bridge keeps, on one Database (SQLite or PostgreSQL)."""

    db: Database
    portals: PortalStore
    puppets: PuppetStore
    messages: MessageStore
    transactions: TransactionStore
    management_rooms: ManagementRoomStore
    vault_keys: VaultKeyStore
    vault_secrets: VaultSecretStore
    audit_log: AuditLogStore
    jtis: JtiStore
    accounts: AccountStore
    identities: LoginIdentityStore
    profiles: ProfileStore
    personas: PersonaStore
    merges: MergeStore
    one_time: OneTimeSecretStore
    rules: MappingRuleStore
    first_sends: FirstSendStore
    capabilities: CapabilityStore
    mfa: MfaFactorStore
    failures: SecurityFailureStore
    session_networks: SessionNetworkStore
    outbound: OutboundStore
    # Matrix room state (members, power levels) lives in the same database, not a JSON file.
    state_store: PgASStateStore

    async def close(self) -> None:
        await self.db.stop()


async def open_database(uri: str, *, min_size: int = 1, max_size: int = 10) -> Storage:
    """Connect, migrate to the latest schema and return the stores."""
    db_args: dict = {"min_size": min_size, "max_size": max_size}
    if uri.startswith("sqlite:"):
        # aiosqlite opens one connection; pool sizes mean nothing there.
        db_args = {}
    db = Database.create(uri, upgrade_table=upgrade_table, db_args=db_args)
    await db.start()
    state_store = PgASStateStore(db)
    await state_store.upgrade_table.upgrade(db)
    return Storage(
        db=db,
        portals=PortalStore(db),
        puppets=PuppetStore(db),
        messages=MessageStore(db),
        transactions=TransactionStore(db),
        management_rooms=ManagementRoomStore(db),
        vault_keys=VaultKeyStore(db),
        vault_secrets=VaultSecretStore(db),
        audit_log=AuditLogStore(db),
        jtis=JtiStore(db),
        accounts=AccountStore(db),
        identities=LoginIdentityStore(db),
        profiles=ProfileStore(db),
        personas=PersonaStore(db),
        merges=MergeStore(db),
        one_time=OneTimeSecretStore(db),
        rules=MappingRuleStore(db),
        first_sends=FirstSendStore(db),
        capabilities=CapabilityStore(db),
        mfa=MfaFactorStore(db),
        failures=SecurityFailureStore(db),
        session_networks=SessionNetworkStore(db),
        outbound=OutboundStore(db),
        state_store=state_store,
    )
