"""Admin sub-commands that work on the database and the vault, without the appservice:
`vault rotate`, `vault status` and `audit verify`."""

from __future__ import annotations

import sys

from .audit import AuditEvent
from .audit.checkpoint import CheckpointError
from .config import Config
from .db import Storage, open_database
from .security.setup import Security, open_security
from .util.progress import Progress


async def _open(config: Config) -> tuple[Security, Storage]:
    storage = await open_database(config["database.uri"])
    try:
        return await open_security(config, storage), storage
    except Exception:
        await storage.close()
        raise


async def vault_rotate(config: Config) -> int:
    security, storage = await _open(config)
    try:
        status = await security.vault.status()
        total = sum(status.data_keys_by_version.values())
        if status.rotation_pending:  # resuming: the keys already on the newest version stay
            total -= status.data_keys_by_version.get(max(status.versions), 0)
        print(f"Rewrapping {total:,} data keys under a new master key...", flush=True)
        report = await security.vault.rotate(on_progress=Progress(total, "data keys rewrapped"))
        await security.audit.append(AuditEvent.KEY_ROTATION, details={
            "master_version": report.target_version, "rewrapped": report.rewrapped,
            "resumed": report.resumed,
        })
        verb = "Finished the interrupted rotation to" if report.resumed else "Rotated to"
        print(f"{verb} master key version {report.target_version}: {report.rewrapped} data "
              f"keys rewrapped.")
        if report.retired:
            print("No data key uses master key version(s) "
                  f"{', '.join(map(str, report.retired))} any more.")
        return 0
    finally:
        await security.close()
        await storage.close()


async def vault_status(config: Config) -> int:
    security, storage = await _open(config)
    try:
        status = await security.vault.status()
        backing = "hardware (PKCS#11)" if status.hardware_backed else "a file, not hardware"
        print(f"Key provider: {status.provider} ({backing})")
        for version, state in sorted(status.versions.items()):
            count = status.data_keys_by_version.get(version, 0)
            print(f"  master key v{version}: {state.value}, wraps {count} data key(s)")
        print(f"Sealed secrets: {status.secrets}")
        if status.rotation_pending:
            print("A rotation is unfinished: run `vault rotate` to finish it.")
        return 0
    finally:
        await security.close()
        await storage.close()


async def audit_verify(config: Config) -> int:
    security, storage = await _open(config)
    try:
        file = security.checkpoints.file
        try:
            checkpoint = file.read()
        except CheckpointError as e:
            print(f"FAILED: {e}", file=sys.stderr)
            return 1
        head = await storage.audit_log.head()
        total = head.seq if head else 0
        if total:
            print(f"Checking {total:,} audit records...", flush=True)
        problems = await security.audit.verify(
            (checkpoint.seq, checkpoint.mac) if checkpoint else None,
            on_progress=Progress(total, "records checked"))
        if problems:
            print(f"FAILED: {problems[0].message}", file=sys.stderr)
            for problem in problems[1:10]:
                print(f"  also: {problem.message}", file=sys.stderr)
            return 1
        if head is None:
            print("OK: the audit log is empty.")
        else:
            against = f", and reaches checkpoint record {checkpoint.seq}" if checkpoint else ""
            print(f"OK: {head.seq} records, chain unbroken{against}. Head {head.mac[:16]}...")
        return 0
    finally:
        # Verifying must not move the checkpoint: close without writing one.
        security.vault.stop()
        await storage.close()


COMMANDS = {
    ("vault", "rotate"): vault_rotate,
    ("vault", "status"): vault_status,
    ("audit", "verify"): audit_verify,
}

