"""Cost of Vault.open() with a warm and a cold data-key cache, as ratios to a plain in-memory
AES-256-GCM decrypt of the same secret measured in the same run.

    .venv/bin/python bench/vault_open.py [--n 2000] [--provider file|pkcs11|both]

pkcs11 uses a throwaway SoftHSM2 token (Debian package softhsm2). The ratios are what to
compare between runs and machines; the microseconds are only for orientation.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bridge.db import open_database
from bridge.security.vault import Vault
from bridge.security.vault.file_provider import FileKeyProvider

SECRET = "xoxe-1-" + "r" * 120  # about the size of a Slack refresh token


def softhsm_provider(directory: Path):
    from bridge.security.vault.pkcs11_provider import Pkcs11KeyProvider

    module = "/usr/lib/softhsm/libsofthsm2.so"
    if not shutil.which("softhsm2-util") or not os.path.exists(module):
        return None
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    pin = secrets.token_hex(4)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench",
                    "--so-pin", pin, "--pin", pin], check=True, capture_output=True)
    return Pkcs11KeyProvider(module, "bench", "bench-master", pin, "bench")


def per_op(seconds: float, n: int) -> float:
    return seconds / n * 1e6


async def measure(provider, directory: Path, n: int) -> dict[str, float]:
    storage = await open_database(f"sqlite:{directory / f'{provider.name}.db'}")
    vault = Vault(provider, storage.vault_keys, storage.vault_secrets, cache_seconds=3600)
    await vault.start()
    await vault.seal("profile", "persona", "refresh_token", SECRET)

    key, nonce = AESGCM.generate_key(256), os.urandom(12)
    ciphertext = AESGCM(key).encrypt(nonce, SECRET.encode(), b"aad")
    aes = AESGCM(key)
    start = time.perf_counter()
    for _ in range(n):
        aes.decrypt(nonce, ciphertext, b"aad")
    baseline = per_op(time.perf_counter() - start, n)

    await vault.open("profile", "persona", "refresh_token")  # warm the cache
    start = time.perf_counter()
    for _ in range(n):
        await vault.open("profile", "persona", "refresh_token")
    warm = per_op(time.perf_counter() - start, n)

    start = time.perf_counter()
    for _ in range(n):
        vault.forget_cached_key("profile")
        await vault.open("profile", "persona", "refresh_token")
    cold = per_op(time.perf_counter() - start, n)

    vault.stop()
    await storage.close()
    return {"baseline_us": baseline, "warm_us": warm, "cold_us": cold}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--provider", choices=["file", "pkcs11", "both"], default="both")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        providers = []
        if args.provider in ("file", "both"):
            providers.append(FileKeyProvider(str(directory / "master.key")))
        if args.provider in ("pkcs11", "both"):
            hsm = softhsm_provider(directory)
            if hsm is None:
                print("pkcs11: skipped, SoftHSM2 is not installed")
            else:
                providers.append(hsm)
        print(f"{'provider':8} {'AES-GCM us':>10} {'warm us':>9} {'cold us':>9} "
              f"{'warm/AES':>9} {'cold/AES':>9} {'cold/warm':>9}")
        for provider in providers:
            r = await measure(provider, directory, args.n)
            print(f"{provider.name:8} {r['baseline_us']:10.2f} {r['warm_us']:9.1f} "
                  f"{r['cold_us']:9.1f} {r['warm_us'] / r['baseline_us']:9.1f} "
                  f"{r['cold_us'] / r['baseline_us']:9.1f} {r['cold_us'] / r['warm_us']:9.2f}")


if __name__ == "__main__":
    asyncio.run(main())
