"""Opening the vault, the audit log, the impersonation keys and the security controls (MFA,
anomaly detection) together, from the config."""

from __future__ import annotations

import attrs

from ..audit import AuditLog
from ..audit.checkpoint import Checkpointer, CheckpointFile
from ..config import Config
from ..db import Storage
from .anomaly import Anomalies, AnomalySettings, SessionNetworks
from .impersonation import TokenMinter, TokenVerifier
from .mfa import Mfa, MfaSettings
from .system_keys import audit_mac_key, impersonation_signing_key
from .vault import Vault, build_vault


@attrs.define
class Security:
    vault: Vault
    audit: AuditLog
    checkpoints: Checkpointer
    minter: TokenMinter
    verifier: TokenVerifier
    anomalies: Anomalies
    session_networks: SessionNetworks
    mfa: Mfa

    async def close(self) -> None:
        await self.checkpoints.write_head()
        self.session_networks.close()
        self.vault.stop()


async def open_security(config: Config, storage: Storage) -> Security:
    vault = await build_vault(config, storage)
    audit_key = await audit_mac_key(vault)
    audit = AuditLog(storage.audit_log, audit_key)
    checkpoints = Checkpointer(CheckpointFile(config["audit.checkpoint_file"], audit_key),
                               storage.audit_log, config["audit.checkpoint_every"])
    audit.on_append(checkpoints)
    signing_key = await impersonation_signing_key(vault)
    anomaly_settings = AnomalySettings.from_config(
        lambda key: config.get(f"security.anomaly.{key}"))
    anomalies = Anomalies(storage, audit, anomaly_settings)
    return Security(
        vault=vault,
        audit=audit,
        checkpoints=checkpoints,
        minter=TokenMinter(signing_key),
        verifier=TokenVerifier(signing_key.public_key(), storage.jtis, audit),
        anomalies=anomalies,
        session_networks=SessionNetworks(storage, audit, anomalies, anomaly_settings),
        mfa=Mfa(storage, vault, audit, anomalies,
                MfaSettings.from_config(lambda key: config[f"security.mfa.{key}"])),
    )
