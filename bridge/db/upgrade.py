"""Numbered schema migrations. v1 is the first schema; later versions append upgrades
(v1-v15 here, v16 on in upgrade_later.py, which registers them in this table)."""

from __future__ import annotations

import logging

from mautrix.util.async_db import Connection, Scheme, UpgradeTable

upgrade_table = UpgradeTable(
    version_table_name="relayforge_version",
    database_name="RelayForge",
    log=logging.getLogger("relayforge.db.upgrade"),
)


@upgrade_table.register(description="Core tables: portals, puppets, messages, transactions")
async def upgrade_v1(conn: Connection, scheme: Scheme) -> None:
    await conn.execute("""
        CREATE TABLE portal (
            network    TEXT NOT NULL,
            remote_id  TEXT NOT NULL,
            mxid       TEXT UNIQUE,
            name       TEXT,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (network, remote_id)
        )
    """)
    await conn.execute("""
        CREATE TABLE puppet (
            network     TEXT NOT NULL,
            remote_id   TEXT NOT NULL,
            mxid        TEXT NOT NULL UNIQUE,
            displayname TEXT,
            avatar_url  TEXT,
            PRIMARY KEY (network, remote_id)
        )
    """)
    # Remote message ids are only unique inside their room on some networks (Slack's ts),
    # so the remote room is part of the key.
    await conn.execute("""
        CREATE TABLE message (
            network     TEXT NOT NULL,
            remote_room TEXT NOT NULL,
            remote_id   TEXT NOT NULL,
            kind        TEXT NOT NULL,
            mxid        TEXT NOT NULL UNIQUE,
            room_mxid   TEXT NOT NULL,
            sender_mxid TEXT NOT NULL,
            timestamp   BIGINT NOT NULL,
            PRIMARY KEY (network, remote_room, remote_id),
            FOREIGN KEY (network, remote_room) REFERENCES portal (network, remote_id)
                ON DELETE CASCADE
        )
    """)
    await conn.execute("CREATE INDEX message_room_idx ON message (room_mxid)")
    await conn.execute("""
        CREATE TABLE appservice_txn (
            txn_id     TEXT PRIMARY KEY,
            handled_at BIGINT NOT NULL
        )
    """)
    await conn.execute("""
        CREATE TABLE management_room (
            user_mxid TEXT PRIMARY KEY,
            room_id   TEXT NOT NULL
        )
    """)


@upgrade_table.register(description="Vault keys and secrets, audit log, impersonation token ids")
async def upgrade_v2(conn: Connection, scheme: Scheme) -> None:
    blob = "BLOB" if scheme == Scheme.SQLITE else "BYTEA"
    await conn.execute("""
        CREATE TABLE vault_master_key (
            version    INTEGER PRIMARY KEY,
            provider   TEXT NOT NULL,
            state      TEXT NOT NULL,
            created_at BIGINT NOT NULL
        )
    """)
    await conn.execute(f"""
        CREATE TABLE vault_data_key (
            profile        TEXT PRIMARY KEY,
            version        INTEGER NOT NULL,
            master_version INTEGER NOT NULL REFERENCES vault_master_key (version),
            wrapped        {blob} NOT NULL,
            created_at     BIGINT NOT NULL
        )
    """)
    await conn.execute("CREATE INDEX vault_data_key_master_idx ON vault_data_key (master_version)")
    await conn.execute(f"""
        CREATE TABLE vault_secret (
            profile     TEXT NOT NULL REFERENCES vault_data_key (profile),
            persona     TEXT NOT NULL,
            field       TEXT NOT NULL,
            key_version INTEGER NOT NULL,
            nonce       {blob} NOT NULL,
            ciphertext  {blob} NOT NULL,
            updated_at  BIGINT NOT NULL,
            PRIMARY KEY (profile, persona, field)
        )
    """)
    await conn.execute("""
        CREATE TABLE audit_log (
            seq        BIGINT PRIMARY KEY,
            ts         TEXT NOT NULL,
            actor      TEXT NOT NULL,
            account    TEXT,
            profile    TEXT,
            persona    TEXT,
            event_type TEXT NOT NULL,
            details    TEXT NOT NULL,
            prev_hash  TEXT NOT NULL,
            mac        TEXT NOT NULL
        )
    """)
    await conn.execute("CREATE INDEX audit_log_account_idx ON audit_log (account, seq)")
    await conn.execute("CREATE INDEX audit_log_actor_idx ON audit_log (actor, seq)")
    await conn.execute("""
        CREATE TABLE impersonation_jti (
            jti        TEXT PRIMARY KEY,
            expires_at BIGINT NOT NULL
        )
    """)


@upgrade_table.register(description="Accounts, profiles, personas, login identities, merges")
async def upgrade_v3(conn: Connection, scheme: Scheme) -> None:
    await conn.execute("""
        CREATE TABLE account (
            id          TEXT PRIMARY KEY,
            status      TEXT NOT NULL,
            credits     BIGINT NOT NULL DEFAULT 0,
            merged_into TEXT REFERENCES account (id),
            created_at  BIGINT NOT NULL
        )
    """)
    await conn.execute("""
        CREATE TABLE account_matrix_user (
            mxid       TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES account (id),
            added_at   BIGINT NOT NULL
        )
    """)
    await conn.execute("CREATE INDEX account_matrix_user_account_idx "
                       "ON account_matrix_user (account_id)")
    await conn.execute("""
        CREATE TABLE login_identity (
            issuer         TEXT NOT NULL,
            subject        TEXT NOT NULL,
            provider_id    TEXT NOT NULL,
            account_id     TEXT NOT NULL REFERENCES account (id),
            email          TEXT,
            email_verified BOOLEAN NOT NULL,
            email_trusted  BOOLEAN NOT NULL,
            added_how      TEXT NOT NULL,
            added_at       BIGINT NOT NULL,
            PRIMARY KEY (issuer, subject)
        )
    """)
    await conn.execute("CREATE INDEX login_identity_account_idx ON login_identity (account_id)")
    await conn.execute("CREATE INDEX login_identity_email_idx ON login_identity (email)")
    await conn.execute("""
        CREATE TABLE profile (
            id         TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES account (id),
            name       TEXT NOT NULL,
            space_mxid TEXT,
            created_at BIGINT NOT NULL,
            UNIQUE (account_id, name)
        )
    """)
    await conn.execute("""
        CREATE TABLE persona (
            id               TEXT PRIMARY KEY,
            profile_id       TEXT NOT NULL REFERENCES profile (id),
            -- The vault keeps its secrets under the profile it was linked in, even if a merge
            -- later moves it: sealed secrets never need re-encrypting.
            vault_profile    TEXT NOT NULL,
            platform         TEXT NOT NULL,
            external_user_id TEXT NOT NULL,
            display_name     TEXT,
            avatar_hash      TEXT,
            scopes           TEXT NOT NULL,
            last_refresh     TEXT,
            status           TEXT NOT NULL,
            created_at       BIGINT NOT NULL,
            UNIQUE (platform, external_user_id)
        )
    """)
    await conn.execute("CREATE INDEX persona_profile_idx ON persona (profile_id)")
    await conn.execute("""
        CREATE TABLE account_merge (
            id           TEXT PRIMARY KEY,
            from_account TEXT NOT NULL REFERENCES account (id),
            into_account TEXT NOT NULL REFERENCES account (id),
            actor        TEXT NOT NULL,
            moved        TEXT NOT NULL,
            merged_at    BIGINT NOT NULL,
            reversed_at  BIGINT,
            reversed_by  TEXT
        )
    """)
    # Short-lived single-use secrets (login links, merge codes, web sessions, pending choices):
    # only their SHA-256 is stored, never the value.
    await conn.execute("""
        CREATE TABLE one_time_secret (
            hash       TEXT PRIMARY KEY,
            kind       TEXT NOT NULL,
            account_id TEXT,
            mxid       TEXT,
            browser    TEXT,
            payload    TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            used_at    BIGINT
        )
    """)


@upgrade_table.register(description="Mapping rules: which remote rooms go to which profile")
async def upgrade_v4(conn: Connection, scheme: Scheme) -> None:
    await conn.execute("""
        CREATE TABLE mapping_rule (
            id           TEXT PRIMARY KEY,
            account_id   TEXT NOT NULL REFERENCES account (id),
            profile_id   TEXT NOT NULL REFERENCES profile (id),
            network      TEXT NOT NULL,
            remote       TEXT NOT NULL,
            target_room  TEXT,
            inbound_only BOOLEAN NOT NULL,
            relay        BOOLEAN NOT NULL,
            created_at   BIGINT NOT NULL,
            UNIQUE (profile_id, network, remote)
        )
    """)
    await conn.execute("CREATE INDEX mapping_rule_remote_idx ON mapping_rule (network, remote)")


@upgrade_table.register(description="Remember which avatar each ghost has")
async def upgrade_v5(conn: Connection) -> None:
    await conn.execute("ALTER TABLE puppet ADD COLUMN avatar_hash TEXT")


@upgrade_table.register(description="First-send confirmation: setting, seen channels, held")
async def upgrade_v6(conn: Connection) -> None:
    await conn.execute("ALTER TABLE profile ADD COLUMN confirm_first_send BOOLEAN NOT NULL "
                       "DEFAULT FALSE")
    await conn.execute("""
        CREATE TABLE send_channel (
            persona_id TEXT NOT NULL,
            channel    TEXT NOT NULL,
            PRIMARY KEY (persona_id, channel)
        )
    """)
    await conn.execute("""
        CREATE TABLE held_send (
            event_id   TEXT PRIMARY KEY,
            room_id    TEXT NOT NULL,
            sender     TEXT NOT NULL,
            persona_id TEXT NOT NULL,
            channel    TEXT NOT NULL,
            created_at BIGINT NOT NULL
        )
    """)


@upgrade_table.register(description="Durable outbound queue: Matrix events waiting to be sent")
async def upgrade_v7(conn: Connection, scheme: Scheme) -> None:
    seq = "BIGSERIAL PRIMARY KEY" if scheme != Scheme.SQLITE else (
        "INTEGER PRIMARY KEY AUTOINCREMENT")
    # The Matrix event is kept whole so a send survives a crash; a message's text is not a
    # credential (credentials only ever live in the vault).
    await conn.execute(f"""
        CREATE TABLE outbound (
            seq          {seq},
            event_id     TEXT NOT NULL UNIQUE,
            room_mxid    TEXT NOT NULL,
            network      TEXT NOT NULL,
            remote_room  TEXT NOT NULL,
            sender       TEXT NOT NULL,
            event        TEXT NOT NULL,
            state        TEXT NOT NULL,
            persona_id   TEXT,
            attempts     INTEGER NOT NULL,
            next_attempt BIGINT NOT NULL,
            created_at   BIGINT NOT NULL,
            last_error   TEXT
        )
    """)
    await conn.execute("CREATE INDEX outbound_room_idx ON outbound (room_mxid, state, seq)")


@upgrade_table.register(description="Capabilities, MFA, failure counts and session networks")
async def upgrade_v8(conn: Connection, scheme: Scheme) -> None:
    seq = "BIGSERIAL PRIMARY KEY" if scheme != Scheme.SQLITE else (
        "INTEGER PRIMARY KEY AUTOINCREMENT")
    # What a person allows the bridge to do as them; no rows for a profile means "whatever the
    # admin's policy allows", so existing people keep working unchanged.
    await conn.execute("""
        CREATE TABLE capability (
            id         TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES account (id),
            profile_id TEXT NOT NULL REFERENCES profile (id) ON DELETE CASCADE,
            persona_id TEXT,
            effect     TEXT NOT NULL,
            actions    TEXT NOT NULL,
            network    TEXT NOT NULL,
            workspace  TEXT NOT NULL,
            channel    TEXT NOT NULL,
            created_at BIGINT NOT NULL
        )
    """)
    await conn.execute("CREATE INDEX capability_profile_idx ON capability (profile_id, network)")
    # The TOTP secret itself is sealed in the vault; this row only says where enrolment
    # stands, the last time-step used (codes are single-use) and when a check last passed.
    await conn.execute("""
        CREATE TABLE mfa_factor (
            account_id    TEXT PRIMARY KEY REFERENCES account (id),
            enrolled_at   BIGINT,
            pending_since BIGINT,
            last_step     BIGINT NOT NULL,
            verified_at   BIGINT
        )
    """)
    # Failures are counted here, not in memory, so a restart resets neither the MFA rate
    # limit nor the anomaly counts. `cleared_at` marks failures an anomaly already acted on.
    await conn.execute(f"""
        CREATE TABLE security_failure (
            id         {seq},
            account_id TEXT NOT NULL,
            persona_id TEXT,
            kind       TEXT NOT NULL,
            at         BIGINT NOT NULL,
            cleared_at BIGINT
        )
    """)
    await conn.execute("CREATE INDEX security_failure_account_idx ON security_failure "
                       "(account_id, at)")
    # The client network a web or provisioning session started from; the credential is only
    # kept as a SHA-256, like one_time_secret.
    await conn.execute("""
        CREATE TABLE session_network (
            credential TEXT PRIMARY KEY,
            account_id TEXT NOT NULL,
            network    TEXT NOT NULL,
            country    TEXT,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            refused_at BIGINT
        )
    """)


@upgrade_table.register(description="Portals record whose conversation they are")
async def upgrade_v9(conn: Connection) -> None:
    # A direct chat belongs to the one persona whose session saw it (`receiver`); a room a
    # rule brought in belongs to that rule. Outbound sends act as exactly that persona.
    await conn.execute("ALTER TABLE portal ADD COLUMN receiver TEXT")
    await conn.execute("ALTER TABLE portal ADD COLUMN rule_id TEXT")
    # Rooms mapped before: the oldest rule naming them mapped them. Direct chats of old rows
    # learn their receiver from the next message their persona's session sees.
    await conn.execute("""
        UPDATE portal SET rule_id = (
            SELECT r.id FROM mapping_rule r
            WHERE r.network = portal.network AND r.remote = portal.remote_id
            ORDER BY r.created_at LIMIT 1)
    """)


@upgrade_table.register(description="Rooms told that encrypted messages cannot be read")
async def upgrade_v10(conn: Connection) -> None:
    await conn.execute("""
        CREATE TABLE encryption_notice (
            room_mxid TEXT PRIMARY KEY,
            told_at   BIGINT NOT NULL
        )
    """)


@upgrade_table.register(description="Outbound sends remember being in flight")
async def upgrade_v11(conn: Connection) -> None:
    # Set just before the connector is called, cleared by any recorded outcome: a row still
    # marked at start-up may have reached the network before a crash, so it is looked up
    # there before it is sent again.
    await conn.execute("ALTER TABLE outbound ADD COLUMN in_flight_at BIGINT")


@upgrade_table.register(description="Messages keep the id their room gave them")
async def upgrade_v12(conn: Connection) -> None:
    # An XMPP MUC names each message by its own stanza-id (XEP-0359), which replies,
    # reactions and retractions there must use instead of the sender's id.
    await conn.execute("ALTER TABLE message ADD COLUMN room_ref TEXT")
    await conn.execute(
        "CREATE INDEX message_room_ref_idx ON message (network, remote_room, room_ref)")


@upgrade_table.register(description="A person's AI agents (MCP): clients, grants, tokens, acts")
async def upgrade_v13(conn: Connection) -> None:
    # Registered OAuth clients (RFC 7591). Their secrets are derived from a vault key and the
    # client id when checked, so none is stored.
    await conn.execute("""
        CREATE TABLE agent_client (
            client_id  TEXT PRIMARY KEY,
            metadata   TEXT NOT NULL,
            created_at BIGINT NOT NULL
        )
    """)
    await conn.execute("""
        CREATE TABLE agent_grant (
            id           TEXT PRIMARY KEY,
            account_id   TEXT NOT NULL,
            client_id    TEXT NOT NULL,
            name         TEXT NOT NULL,
            actions      TEXT NOT NULL,
            profile_ids  TEXT NOT NULL,
            networks     TEXT NOT NULL,
            created_at   BIGINT NOT NULL,
            last_used_at BIGINT,
            revoked_at   BIGINT
        )
    """)
    await conn.execute("CREATE INDEX agent_grant_account_idx ON agent_grant (account_id)")
    # Codes, access and refresh tokens: only their SHA-256.
    await conn.execute("""
        CREATE TABLE agent_token (
            hash       TEXT PRIMARY KEY,
            kind       TEXT NOT NULL,
            grant_id   TEXT NOT NULL,
            client_id  TEXT NOT NULL,
            scopes     TEXT NOT NULL,
            expires_at BIGINT NOT NULL,
            used_at    BIGINT,
            payload    TEXT NOT NULL
        )
    """)
    await conn.execute("CREATE INDEX agent_token_grant_idx ON agent_token (grant_id)")
    await conn.execute("""
        CREATE TABLE agent_act (
            event_id   TEXT PRIMARY KEY,
            grant_id   TEXT NOT NULL,
            channel    TEXT NOT NULL,
            event      TEXT NOT NULL,
            created_at BIGINT NOT NULL
        )
    """)
    # Channels each agent's first message was confirmed for by its person.
    await conn.execute("""
        CREATE TABLE agent_channel (
            grant_id TEXT NOT NULL,
            channel  TEXT NOT NULL,
            PRIMARY KEY (grant_id, channel)
        )
    """)
    # A capability rule may name one agent: it narrows what that agent does, never widens.
    await conn.execute("ALTER TABLE capability ADD COLUMN agent TEXT")


@upgrade_table.register(description="A sub-space per profile and network workspace")
async def upgrade_v14(conn: Connection) -> None:
    # A Discord server or Slack team a profile has rooms from gets one space of its own,
    # a child of the profile's space; made once and reused.
    await conn.execute("""
        CREATE TABLE workspace_space (
            profile_id TEXT NOT NULL,
            network    TEXT NOT NULL,
            workspace  TEXT NOT NULL,
            space_mxid TEXT NOT NULL,
            PRIMARY KEY (profile_id, network, workspace)
        )
    """)


@upgrade_table.register(description="Where each persona's session is in its update stream")
async def upgrade_v15(conn: Connection) -> None:
    # A network-neutral cursor (Telegram: pts, qts, date, seq and each channel's pts) as
    # JSON, written as updates are handled and read when the session opens again.
    await conn.execute("""
        CREATE TABLE sync_state (
            persona_id TEXT PRIMARY KEY,
            state      TEXT NOT NULL,
            updated_at BIGINT NOT NULL
        )
    """)
