"""`export`: write a hold's bundle, print the export public key, verify a bundle.

  python -m bridge -c config.yaml export --hold NAME --out DIR
  python -m bridge -c config.yaml export public-key
  python -m bridge export verify DIR [--public-key FILE]   (no vault needed with --public-key)
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

from ..config import Config
from ..db import open_database
from ..db.held_message import HeldStore
from ..security.setup import open_security
from ..util.progress import Progress
from .archive import HoldArchive
from .export import BundleWriter, export_public_key_pem
from .holds import HoldError, Holds
from .verify import BundleInvalid, load_public_key, verify_bundle


def _actor() -> str:
    """Who exported, for the audit record: the command line and the system user running it."""
    try:
        return f"command-line:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container)
        return "command-line"


async def write_export(config: Config, hold: str, out: str) -> int:
    storage = await open_database(config["database.uri"])
    try:
        security = await open_security(config, storage)
    except Exception:
        await storage.close()
        raise
    try:
        holds = Holds(storage, security.audit)
        archive = HoldArchive(storage, holds, security.vault, security.audit)
        try:
            found = await holds.get(hold)
        except HoldError as e:
            print(f"Cannot export: {e}", file=sys.stderr)
            return 2
        total = await HeldStore(storage.db).count_of_hold(found.id)
        print(f"Exporting hold {hold}: {total:,} messages...", flush=True)
        writer = BundleWriter(storage, holds, archive, security.vault, security.audit)
        try:
            result = await writer.write(hold, Path(out), _actor(),
                                        on_progress=Progress(total, "messages written"))
        except FileExistsError as e:
            print(f"Cannot export: {e}", file=sys.stderr)
            return 2
        print(f"Wrote {result['messages']} messages and {result['files']} files to {out}; "
              f"check it with `python -m bridge export verify {out} --public-key FILE`.")
        return 0
    finally:
        await security.close()
        await storage.close()


async def print_public_key(config: Config) -> int:
    storage = await open_database(config["database.uri"])
    try:
        security = await open_security(config, storage)
    except Exception:
        await storage.close()
        raise
    try:
        sys.stdout.write((await export_public_key_pem(security.vault)).decode())
        return 0
    finally:
        security.vault.stop()
        await storage.close()


def verify_with_key(directory: str, pem: bytes) -> int:
    try:
        checked = verify_bundle(Path(directory), load_public_key(pem))
    except BundleInvalid as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(f"OK: the signature matches and all {checked} files are as signed; nothing was "
          "added or removed.")
    return 0


def verify_with_file(directory: str, key_file: str) -> int:
    try:
        pem = Path(key_file).read_bytes()
    except OSError as e:
        print(f"Cannot verify: --public-key {key_file}: {e.strerror}", file=sys.stderr)
        return 2
    return verify_with_key(directory, pem)


async def verify_with_vault(config: Config, directory: str) -> int:
    storage = await open_database(config["database.uri"])
    try:
        security = await open_security(config, storage)
    except Exception:
        await storage.close()
        raise
    try:
        pem = await export_public_key_pem(security.vault)
    finally:
        security.vault.stop()
        await storage.close()
    return verify_with_key(directory, pem)
