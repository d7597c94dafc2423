"""Opening the database and bundling the per-table stores."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
from mautrix.appservice.state_store.asyncpg import PgASStateStore
from mautrix.types import (
    EventType,
    Member,
    Membership,
    MemberStateEventContent,
    PowerLevelStateEventContent,
    RoomID,
    Serializable,
    StateEvent,
    UserID,
)
from mautrix.util.async_db import Database

from . import upgrade_later  # noqa: F401 - importing it registers versions 16 and later
from .account import AccountStore
from .account_merge import MergeStore
from .agent import AgentStore
from .audit_log import AuditLogStore
from .backfill import BackfillStore
from .capability import CapabilityStore
from .encryption_notice import EncryptionNoticeStore
from .first_send import FirstSendStore
from .impersonation_jti import JtiStore
from .lease_channel import one_migration_at_a_time
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
from .sqlite_conn import create_database
from .sync_state import SyncStateStore
from .transaction import TransactionStore
from .upgrade import upgrade_table
from .vault_key import VaultKeyStore
from .vault_secret import VaultSecretStore
from .workspace_space import WorkspaceSpaceStore

T = TypeVar("T", PowerLevelStateEventContent, StateEvent)
T2 = TypeVar("T2")
_PARSED_MAX = 4096
#: Rooms whose state is kept in memory by default (`bridge.room_state_cache_size`).
ROOM_STATE_CACHE_SIZE = 10_000


class CachedASStateStore(PgASStateStore):
    """mautrix's database state store with an in-memory copy of what every send reads.

    Each ghost message makes mautrix check the ghost's membership and the room's power levels
    and create event (`IntentAPI.send_message`); on a single SQLite connection those reads
    were most of the relay's database round trips. mautrix 0.21 has no caching layer for
    `PgASStateStore`, so this adds one. Writes go to the database first and then to the copy
    (write-through); the state events the homeserver sends reach `update_state` (mautrix
    registers it as the first event handler), so membership and power-level changes made by
    people update the copy before the bridge handles the event. With several workers, a write
    tells the others to drop the room's copy (core/workers.py). Members, power levels and
    create events are kept for the `max_rooms` rooms used last (about a kilobyte a room); a
    room dropped from the copy is read from the database again when next needed.
    """

    def __init__(self, db: Database, max_rooms: int = ROOM_STATE_CACHE_SIZE) -> None:
        super().__init__(db)
        self.max_rooms = max(1, max_rooms)
        # The rooms in the copy, least recently used first.
        self._recent: OrderedDict[RoomID, None] = OrderedDict()
        # Reads awaiting the database: only they compare the write counts below.
        self._reading = 0
        # None means "known to be absent", so a missing row is not read again and again.
        self._members: dict[RoomID, dict[UserID, Member | None]] = {}
        # Kept as JSON and parsed on each read: mautrix mutates the power levels it gets
        # (to raise someone) before sending them, and a failed send must not change the copy.
        self._power_levels: dict[RoomID, str | None] = {}
        self._creates: dict[RoomID, str | None] = {}
        # Parsed once per version, for `has_power_level` only (it reads, never changes them):
        # parsing costs about a millisecond a send. Keyed by the JSON they came from.
        self._parsed: dict[str, Any] = {}
        # Bumped on every write to a room: a read that awaited the database while a write
        # happened may hold the old value and must not put it in the copy. Emptied when a read
        # starts while no other waits (the counts mean nothing then), so it does not grow.
        self._writes: dict[RoomID, int] = {}
        # With several workers, each writes what its transactions carry: they tell the others.
        self.on_write: list[Callable[[RoomID], None]] = []

    @property
    def cached_rooms(self) -> int:
        """How many rooms' state is in memory now (never more than `max_rooms`)."""
        return len(self._recent)

    def _wrote(self, room_id: RoomID) -> None:
        self._writes[room_id] = self._writes.get(room_id, 0) + 1
        for hook in self.on_write:
            hook(room_id)

    def drop_room(self, room_id: RoomID) -> None:
        """Another worker changed the room's state: read it from the database next time."""
        self._writes[room_id] = self._writes.get(room_id, 0) + 1
        self._forget(room_id)
        self._recent.pop(room_id, None)

    def _forget(self, room_id: RoomID) -> None:
        self._members.pop(room_id, None)
        self._power_levels.pop(room_id, None)
        self._creates.pop(room_id, None)

    def _used(self, room_id: RoomID) -> None:
        """The room's copy was read or written: drop the least recently used past the size."""
        if room_id in self._recent:
            self._recent.move_to_end(room_id)
            return
        self._recent[room_id] = None
        while len(self._recent) > self.max_rooms:
            oldest, _ = self._recent.popitem(last=False)
            self._forget(oldest)

    def _read_starts(self, room_id: RoomID) -> int:
        """The room's write count now, for a read about to await the database (`_from_db`)."""
        if not self._reading:
            self._writes.clear()  # no read is waiting: nobody compares the old counts
        self._reading += 1
        return self._writes.get(room_id, 0)

    async def _from_db(self, query: Awaitable[T2]) -> T2:
        try:
            return await query
        finally:
            # Only the next read to start clears the counts: this one still compares them.
            self._reading -= 1

    async def get_member(self, room_id: RoomID, user_id: UserID) -> Member | None:
        room = self._members.get(room_id)
        if room is not None and user_id in room:
            self._used(room_id)
            return _copy_member(room[user_id])
        before = self._read_starts(room_id)
        member = await self._from_db(super().get_member(room_id, user_id))
        if self._writes.get(room_id, 0) == before:
            self._members.setdefault(room_id, {})[user_id] = _copy_member(member)
            self._used(room_id)
        return member

    async def set_member(self, room_id: RoomID, user_id: UserID,
                         member: Member | MemberStateEventContent) -> None:
        await super().set_member(room_id, user_id, member)
        self._members.setdefault(room_id, {})[user_id] = Member(
            membership=member.membership, displayname=member.displayname,
            avatar_url=member.avatar_url)
        self._used(room_id)
        self._wrote(room_id)

    async def set_membership(self, room_id: RoomID, user_id: UserID,
                             membership: Membership) -> None:
        await super().set_membership(room_id, user_id, membership)
        room = self._members.setdefault(room_id, {})
        if user_id in room:
            # The row keeps its name and avatar; a new row has none, as in the database.
            known = room[user_id]
            room[user_id] = Member(membership=membership,
                                   displayname=known.displayname if known else None,
                                   avatar_url=known.avatar_url if known else None)
        self._used(room_id)
        self._wrote(room_id)

    async def set_members(self, room_id: RoomID,
                          members: dict[UserID, Member | MemberStateEventContent],
                          only_membership: Membership | None = None) -> None:
        await super().set_members(room_id, members, only_membership)
        # Rows were deleted and rewritten in bulk: read them again when needed.
        self._members.pop(room_id, None)
        self._wrote(room_id)

    async def has_power_levels_cached(self, room_id: RoomID) -> bool:
        return await self._power_levels_json(room_id) is not None

    async def get_power_levels(self, room_id: RoomID) -> PowerLevelStateEventContent | None:
        levels = await self._power_levels_json(room_id)
        return PowerLevelStateEventContent.parse_json(levels) if levels is not None else None

    async def _power_levels_json(self, room_id: RoomID) -> str | None:
        if room_id in self._power_levels:
            self._used(room_id)
            return self._power_levels[room_id]
        before = self._read_starts(room_id)
        levels = await self._from_db(self.db.fetchval(
            "SELECT power_levels FROM mx_room_state WHERE room_id=$1", room_id))
        if self._writes.get(room_id, 0) == before:
            self._power_levels[room_id] = levels
            self._used(room_id)
        return levels

    async def set_power_levels(self, room_id: RoomID,
                               content: PowerLevelStateEventContent | dict[str, Any]) -> None:
        await super().set_power_levels(room_id, content)
        self._power_levels[room_id] = _json(content)
        self._used(room_id)
        self._wrote(room_id)

    async def has_power_level(self, room_id: RoomID, user_id: UserID,
                              event_type: EventType) -> bool | None:
        levels_json = await self._power_levels_json(room_id)
        if levels_json is None:
            return None
        levels = self._parse(levels_json, PowerLevelStateEventContent)
        create_json = await self._create_json(room_id)
        create = self._parse(create_json, StateEvent) if create_json is not None else None
        return levels.get_user_level(user_id, create) >= levels.get_event_level(event_type)

    def _parse(self, text: str, kind: type[T]) -> T:
        parsed = self._parsed.get(text)
        if not isinstance(parsed, kind):
            if len(self._parsed) >= _PARSED_MAX:
                self._parsed.clear()  # old versions; the live ones are parsed again
            parsed = self._parsed[text] = kind.parse_json(text)
        return parsed

    async def has_create_cached(self, room_id: RoomID) -> bool:
        return await self._create_json(room_id) is not None

    async def get_create(self, room_id: RoomID) -> StateEvent | None:
        create = await self._create_json(room_id)
        return StateEvent.parse_json(create) if create is not None else None

    async def _create_json(self, room_id: RoomID) -> str | None:
        if room_id in self._creates:
            self._used(room_id)
            return self._creates[room_id]
        before = self._read_starts(room_id)
        create = await self._from_db(self.db.fetchval(
            "SELECT create_event FROM mx_room_state WHERE room_id=$1", room_id))
        if self._writes.get(room_id, 0) == before:
            self._creates[room_id] = create
            self._used(room_id)
        return create

    async def set_create(self, event: StateEvent) -> None:
        await super().set_create(event)
        self._creates[event.room_id] = _json(event)
        self._used(event.room_id)
        self._wrote(event.room_id)


def _copy_member(member: Member | None) -> Member | None:
    # Callers get their own object, as they did from the database.
    if member is None:
        return None
    return Member(membership=member.membership, displayname=member.displayname,
                  avatar_url=member.avatar_url)


def _json(content: Serializable | dict[str, Any]) -> str:
    return json.dumps(content.serialize() if isinstance(content, Serializable) else content)


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
    encryption_notices: EncryptionNoticeStore
    agents: AgentStore
    workspace_spaces: WorkspaceSpaceStore
    sync_states: SyncStateStore
    backfills: BackfillStore
    # Matrix room state (members, power levels) lives in the same database, not a JSON file.
    state_store: CachedASStateStore

    async def close(self) -> None:
        await self.db.stop()


def _create_private(path: str) -> None:
    """Create a new SQLite file readable by its owner only: it holds wrapped keys, accounts
    and the audit log. SQLite gives its -wal and -shm files the same mode."""
    if path.startswith("//"):
        path = path[2:]
    if not path or path == ":memory:" or os.path.exists(path):
        return
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


async def open_database(uri: str, *, min_size: int = 1, max_size: int = 10) -> Storage:
    """Connect, migrate to the latest schema and return the stores."""
    db_args: dict = {"min_size": min_size, "max_size": max_size}
    if uri.startswith("sqlite:"):
        _create_private(uri.removeprefix("sqlite:").split("?", 1)[0])
        # One connection, on purpose. mautrix's aiosqlite backend could pool (min_size
        # connections, WAL, busy_timeout), but its transactions are deferred BEGINs: two
        # connections that read and then write (the audit log's read-head-then-append,
        # which has no lock on SQLite) fail with SQLITE_BUSY_SNAPSHOT instead of waiting.
        db_args = {}
    db = create_database(uri, upgrade_table=upgrade_table, db_args=db_args)
    state_store = CachedASStateStore(db)
    async with one_migration_at_a_time(db):  # several workers may start at once
        await db.start()
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
        encryption_notices=EncryptionNoticeStore(db),
        agents=AgentStore(db),
        workspace_spaces=WorkspaceSpaceStore(db),
        sync_states=SyncStateStore(db),
        backfills=BackfillStore(db),
        state_store=state_store,
    )
