"""Checking an export bundle: the manifest's Ed25519 signature, then the SHA-256 of every file
it lists, then that no file was added. Needs only the bundle and the public key."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"


class BundleInvalid(Exception):
    """The bundle does not verify; the message names the first file that differs."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as e:
        raise BundleInvalid(f"the public key is not a PEM public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleInvalid("the public key is not an Ed25519 key")
    return key


def bundle_files(directory: Path) -> list[str]:
    """Every file under the bundle, as the manifest names them (POSIX relative paths)."""
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                  if p.is_file() or p.is_symlink())


def verify_bundle(directory: Path, public_key: Ed25519PublicKey) -> int:
    """Raise BundleInvalid naming the first problem; return how many files were checked."""
    manifest_path, signature_path = directory / MANIFEST, directory / SIGNATURE
    if not directory.is_dir():
        raise BundleInvalid(f"{directory}: not a directory")
    for required in (manifest_path, signature_path):
        if not required.is_file():
            raise BundleInvalid(f"{required.name}: removed (every bundle has one)")
    raw = manifest_path.read_bytes()
    try:
        signature = base64.b64decode(signature_path.read_bytes().strip(), validate=True)
        public_key.verify(signature, raw)
    except (InvalidSignature, ValueError):
        raise BundleInvalid(f"{MANIFEST}: changed (its signature does not match the public "
                            "key), or the bundle was signed by another key") from None
    try:
        listed: dict[str, str] = json.loads(raw)["files"]
    except (ValueError, KeyError, TypeError):
        raise BundleInvalid(f"{MANIFEST}: not a bundle manifest") from None
    for name in sorted(listed):
        path = directory / name
        if not path.is_file():
            raise BundleInvalid(f"{name}: removed")
        if file_sha256(path) != listed[name]:
            raise BundleInvalid(f"{name}: changed (its SHA-256 differs from the manifest's)")
    for name in bundle_files(directory):
        if name not in listed and name not in (MANIFEST, SIGNATURE):
            raise BundleInvalid(f"{name}: added (not in the manifest)")
    return len(listed)
