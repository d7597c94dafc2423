"""Schema migrations from v16 on. Each names its index: the modules of those features were
written side by side, so their versions were numbered when they met, not in file order."""

from __future__ import annotations

from mautrix.util.async_db import Connection, Scheme

from .upgrade import upgrade_table


@upgrade_table.register(index=19, description="Web sessions remember their browser and when "
                        "they were last used")
async def upgrade_v20(conn: Connection) -> None:
    # Keyed by the session's hash in one_time_secret (never the cookie itself), so the
    # portal can list a person's sessions and end one of them from another browser.
    await conn.execute("""
        CREATE TABLE web_session_seen (
            hash       TEXT PRIMARY KEY,
            account_id TEXT NOT NULL,
            user_agent TEXT NOT NULL,
            network    TEXT,
            first_seen BIGINT NOT NULL,
            last_seen  BIGINT NOT NULL,
            expires_at BIGINT NOT NULL
        )
    """)
    await conn.execute("CREATE INDEX web_session_seen_account ON web_session_seen (account_id)")


@upgrade_table.register(index=18, description="How far each portal's history was brought in")
async def upgrade_v19(conn: Connection) -> None:
    # One row per portal: the history cursor (where catching up after downtime starts) and
    # a running backfill's progress, so one a crash interrupted resumes where it was.
    await conn.execute("""
        CREATE TABLE backfill_state (
            network      TEXT NOT NULL,
            remote_room  TEXT NOT NULL,
            persona_id   TEXT NOT NULL,
            status       TEXT NOT NULL,
            cursor_ts    BIGINT,
            cursor_token TEXT,
            remaining    INTEGER NOT NULL,
            sent         INTEGER NOT NULL,
            kind         TEXT NOT NULL,
            updated_at   BIGINT NOT NULL,
            PRIMARY KEY (network, remote_room)
        )
    """)
    await conn.execute("CREATE INDEX backfill_state_status ON backfill_state (status)")


@upgrade_table.register(index=15, description="Legal holds and the sealed archive of what "
                        "they hold")
async def upgrade_v16(conn: Connection, scheme: Scheme) -> None:
    blob = "BLOB" if scheme == Scheme.SQLITE else "BYTEA"
    # One scope per hold: a custodian (account or Matrix user), a room or a workspace.
    await conn.execute("""
        CREATE TABLE legal_hold (
            id          TEXT PRIMARY KEY,
            name        TEXT NOT NULL UNIQUE,
            reason      TEXT,
            scope       TEXT NOT NULL,
            network     TEXT,
            target      TEXT NOT NULL,
            starts_at   BIGINT,
            ends_at     BIGINT,
            created_by  TEXT NOT NULL,
            created_at  BIGINT NOT NULL,
            released_by TEXT,
            released_at BIGINT
        )
    """)
    # Ids and metadata in the clear (they are what a reviewer searches by); every text,
    # HTML, file name, reaction key and file is sealed (nonce + AES-GCM ciphertext).
    await conn.execute("""
        CREATE TABLE held_message (
            id            TEXT PRIMARY KEY,
            network       TEXT NOT NULL,
            remote_room   TEXT NOT NULL,
            remote_id     TEXT NOT NULL,
            room_ref      TEXT,
            room_mxid     TEXT,
            mxid          TEXT,
            workspace     TEXT,
            side          TEXT NOT NULL,
            sender_remote TEXT,
            sender_name   TEXT,
            sender_mxid   TEXT,
            persona_id    TEXT,
            reply_to      TEXT,
            thread_root   TEXT,
            remote_ts     BIGINT,
            matrix_ts     BIGINT,
            captured_at   BIGINT NOT NULL,
            deleted_at    BIGINT,
            deleted_by    TEXT,
            deleted_side  TEXT,
            deletion_mxid TEXT,
            UNIQUE (network, remote_room, remote_id)
        )
    """)
    await conn.execute("CREATE INDEX held_message_mxid_idx ON held_message (mxid)")
    await conn.execute("CREATE INDEX held_message_ref_idx ON held_message "
                       "(network, remote_room, room_ref)")
    await conn.execute(f"""
        CREATE TABLE held_version (
            message_id TEXT NOT NULL REFERENCES held_message (id) ON DELETE CASCADE,
            seq        INTEGER NOT NULL,
            remote_id  TEXT,
            mxid       TEXT,
            side       TEXT NOT NULL,
            remote_ts  BIGINT,
            matrix_ts  BIGINT,
            nonce      {blob} NOT NULL,
            ciphertext {blob} NOT NULL,
            PRIMARY KEY (message_id, seq)
        )
    """)
    await conn.execute(f"""
        CREATE TABLE held_reaction (
            id            TEXT PRIMARY KEY,
            message_id    TEXT NOT NULL REFERENCES held_message (id) ON DELETE CASCADE,
            network       TEXT NOT NULL,
            remote_room   TEXT NOT NULL,
            remote_id     TEXT,
            mxid          TEXT,
            side          TEXT NOT NULL,
            sender_remote TEXT,
            sender_mxid   TEXT,
            remote_ts     BIGINT,
            matrix_ts     BIGINT,
            nonce         {blob} NOT NULL,
            ciphertext    {blob} NOT NULL,
            removed_at    BIGINT,
            removed_by    TEXT,
            removed_side  TEXT
        )
    """)
    await conn.execute("CREATE INDEX held_reaction_message_idx ON held_reaction (message_id)")
    await conn.execute(f"""
        CREATE TABLE held_attachment (
            message_id TEXT NOT NULL REFERENCES held_message (id) ON DELETE CASCADE,
            sha256     TEXT NOT NULL,
            size       BIGINT NOT NULL,
            nonce      {blob} NOT NULL,
            ciphertext {blob} NOT NULL,
            PRIMARY KEY (message_id, sha256)
        )
    """)
    await conn.execute("""
        CREATE TABLE held_message_hold (
            message_id TEXT NOT NULL REFERENCES held_message (id) ON DELETE CASCADE,
            hold_id    TEXT NOT NULL REFERENCES legal_hold (id),
            PRIMARY KEY (message_id, hold_id)
        )
    """)
    await conn.execute("CREATE INDEX held_message_hold_idx ON held_message_hold (hold_id)")


@upgrade_table.register(index=16, description="Retention and forget-me: pseudonymised audit "
                        "records, purge indexes")
async def upgrade_v17(conn: Connection) -> None:
    # A record whose person was forgotten keeps its MAC (the chain and the checkpoints still
    # hold); this column then holds the MAC of its pseudonymised form (bridge.audit.log).
    await conn.execute("ALTER TABLE audit_log ADD COLUMN pseudonymised TEXT")
    # Retention deletes by age every day.
    await conn.execute("CREATE INDEX message_timestamp_idx ON message (timestamp)")
    await conn.execute("CREATE INDEX outbound_created_idx ON outbound (created_at)")


@upgrade_table.register(index=17, description="Several workers on one PostgreSQL: worker "
                        "heartbeats and the leases of rooms and sessions")
async def upgrade_v18(conn: Connection) -> None:
    # core/workers.py: a worker is alive while expires_at is ahead; its leases with it.
    await conn.execute("""
        CREATE TABLE bridge_worker (
            worker_id    TEXT PRIMARY KEY,
            mode         TEXT NOT NULL,
            started_at   BIGINT NOT NULL,
            heartbeat_at BIGINT NOT NULL,
            expires_at   BIGINT NOT NULL
        )
    """)
    await conn.execute("""
        CREATE TABLE lease (
            resource TEXT PRIMARY KEY,
            owner    TEXT NOT NULL,
            taken_at BIGINT NOT NULL
        )
    """)
    await conn.execute("CREATE INDEX lease_owner_idx ON lease (owner)")


@upgrade_table.register(index=20, description="The newest message of a remote room found "
                        "without reading all of its messages")
async def upgrade_v21(conn: Connection) -> None:
    # Rejoining a rule's room asks for its newest bridged message (catch-up from there): with
    # a week of traffic (a million rows) that was a scan of the room's rows, per rule, per start.
    await conn.execute("CREATE INDEX message_room_time_idx ON message "
                       "(network, remote_room, timestamp)")


@upgrade_table.register(index=21, description="Each bridged message updates two indexes fewer")
async def upgrade_v22(conn: Connection) -> None:
    # Every relayed message inserts a map row, and each index on it is one more B-tree to
    # update (with a week of traffic, a page read from disk each). No query looks messages up
    # by their Matrix room, so that index only cost inserts.
    await conn.execute("DROP INDEX message_room_idx")
    # Only rooms that give messages their own ids (XMPP MUC stanza-ids) set room_ref: the other
    # networks' rows need no entry. `room_ref=$3` implies NOT NULL, so lookups still use it.
    await conn.execute("DROP INDEX message_room_ref_idx")
    await conn.execute("CREATE INDEX message_room_ref_idx ON message "
                       "(network, remote_room, room_ref) WHERE room_ref IS NOT NULL")
