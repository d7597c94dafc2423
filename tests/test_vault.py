"""The credential vault on a real SoftHSM2 token and on a key file, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import secrets
import subprocess

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, Mechanism

from bridge.config import ConfigError
from bridge.configure import load_config
from bridge.db import open_database
from bridge.security.vault import SecretDoesNotOpen, SecretNotFound, Vault, VaultError
from bridge.security.vault.file_provider import FileKeyProvider
from bridge.security.vault.pkcs11_provider import Pkcs11KeyProvider


class CrashHere(Exception):
    """Stands for the process dying at this point of a rotation."""


@pytest.fixture(params=["file", "pkcs11"])
def make_provider(request, tmp_path, softhsm_if_needed):
    key_label = f"test-{secrets.token_hex(4)}"

    def make(pin: str | None = None):
        if request.param == "file":
            return FileKeyProvider(str(tmp_path / "master.key"))
        return Pkcs11KeyProvider(softhsm_if_needed.module, softhsm_if_needed.label, key_label,
                                 pin or softhsm_if_needed.pin, "$TEST_PIN")

    make.kind = request.param
    make.key_label = key_label
    return make


@pytest.fixture
def softhsm_if_needed(request):
    # Only the pkcs11 cases need the token; the file cases must not skip without it.
    if "pkcs11" in request.node.callspec.id:
        return request.getfixturevalue("softhsm")
    return None


@pytest.fixture
async def storage(db_uri):
    storage = await open_database(db_uri)
    yield storage
    await storage.close()


@pytest.fixture
async def vault(storage, make_provider):
    vault = Vault(make_provider(), storage.vault_keys, storage.vault_secrets)
    await vault.start()
    yield vault
    vault.stop()


async def test_seal_open_round_trip(vault):
    await vault.seal("p1", "slack:U1", "refresh_token", "xoxe-1-secret")
    await vault.seal("p1", "slack:U1", "refresh_token", "xoxe-2-newer")
    assert await vault.open_text("p1", "slack:U1", "refresh_token") == "xoxe-2-newer"
    with pytest.raises(SecretNotFound, match="no password is stored for persona xmpp:a"):
        await vault.open("p1", "xmpp:a", "password")
    assert await vault.destroy("p1", "slack:U1") == 1
    with pytest.raises(SecretNotFound):
        await vault.open("p1", "slack:U1", "refresh_token")


@pytest.mark.parametrize("to", [("p1", "slack:U2", "refresh_token"),
                                ("p1", "slack:U1", "access_token"),
                                ("p2", "slack:U1", "refresh_token")])
async def test_ciphertext_moved_to_another_owner_or_field_does_not_open(vault, storage, to):
    await vault.seal("p1", "slack:U1", "refresh_token", "the real one")
    await vault.seal("p2", "other", "x", "makes p2's data key")
    await vault.seal(*to, "placeholder")
    # Copy the sealed bytes onto the other row, as someone with database access might.
    await storage.db.execute(
        "UPDATE vault_secret SET nonce=(SELECT nonce FROM vault_secret WHERE profile='p1' AND "
        "persona='slack:U1' AND field='refresh_token'), ciphertext=(SELECT ciphertext FROM "
        "vault_secret WHERE profile='p1' AND persona='slack:U1' AND field='refresh_token') "
        "WHERE profile=$1 AND persona=$2 AND field=$3", *to)
    vault.forget_cached_key(to[0])
    with pytest.raises(SecretDoesNotOpen) as info:
        await vault.open(*to)
    assert f"the stored {to[2]} of persona {to[1]}" in str(info.value)
    assert await vault.open_text("p1", "slack:U1", "refresh_token") == "the real one"


async def test_rotation_rewraps_every_data_key_and_old_ciphertexts_open(vault, storage):
    for i in range(5):
        await vault.seal(f"profile-{i}", "telegram:1", "session", f"session-{i}")
    before = await storage.db.fetch("SELECT profile, ciphertext FROM vault_secret")
    report = await vault.rotate()
    assert (report.target_version, report.rewrapped, report.resumed) == (2, 5, False)
    assert report.retired == [1]
    status = await vault.status()
    assert status.data_keys_by_version == {2: 5}
    # Secrets were not re-encrypted, only their data keys rewrapped.
    assert await storage.db.fetch("SELECT profile, ciphertext FROM vault_secret") == before
    fresh = Vault(vault.provider, storage.vault_keys, storage.vault_secrets)
    for i in range(5):
        assert await fresh.open_text(f"profile-{i}", "telegram:1", "session") == f"session-{i}"


async def test_crash_mid_rotation_loses_nothing(vault, storage, make_provider):
    for i in range(6):
        await vault.seal(f"profile-{i}", "xmpp:me", "password", f"pw-{i}")

    def crash_after_two(done: int) -> None:
        if done == 2:
            raise CrashHere

    with pytest.raises(CrashHere):
        await vault.rotate(on_progress=crash_after_two)
    vault.stop()

    # "Restart": a new provider session and vault over the same database.
    restarted = Vault(make_provider(), storage.vault_keys, storage.vault_secrets)
    await restarted.start()
    status = await restarted.status()
    assert status.rotation_pending
    assert status.data_keys_by_version == {1: 4, 2: 2}
    for i in range(6):
        assert await restarted.open_text(f"profile-{i}", "xmpp:me", "password") == f"pw-{i}"
    report = await restarted.rotate()
    assert (report.target_version, report.rewrapped, report.resumed) == (2, 4, True)
    assert (await restarted.status()).data_keys_by_version == {2: 6}
    for i in range(6):
        assert await restarted.open_text(f"profile-{i}", "xmpp:me", "password") == f"pw-{i}"
    restarted.stop()


async def test_opened_key_is_cached_until_a_persona_is_revoked(vault, storage):
    await vault.seal("p1", "slack:U1", "refresh_token", "one")
    await vault.seal("p1", "slack:U2", "refresh_token", "two")
    # Spoil the stored wrapped key: only the cached, already-opened key can still open.
    await storage.db.execute("UPDATE vault_data_key SET wrapped=$1 WHERE profile='p1'",
                             os.urandom(40))
    assert await vault.open_text("p1", "slack:U1", "refresh_token") == "one"
    assert await vault.revoke_persona("p1", "slack:U2") == 1
    with pytest.raises(VaultError, match="does not unwrap"):
        await vault.open("p1", "slack:U1", "refresh_token")


# ---- provider specifics ---------------------------------------------------------------------

@pytest.fixture
def hsm_session(softhsm):
    lib = pkcs11.lib(softhsm.module)
    with lib.get_token(token_label=softhsm.label).open(user_pin=softhsm.pin, rw=True) as session:
        yield session


async def test_hsm_master_key_cannot_leave_the_token(softhsm, hsm_session, storage):
    label = f"test-{secrets.token_hex(4)}"
    vault = Vault(Pkcs11KeyProvider(softhsm.module, softhsm.label, label, softhsm.pin, "$PIN"),
                  storage.vault_keys, storage.vault_secrets)
    await vault.start()
    await vault.seal("p1", "slack:U1", "refresh_token", "secret")
    master = hsm_session.get_key(label=f"{label}:v1")
    assert master[Attribute.EXTRACTABLE] is False
    assert master[Attribute.SENSITIVE] is True
    with pytest.raises(pkcs11.exceptions.AttributeSensitive):
        master[Attribute.VALUE]
    other = hsm_session.generate_key(KeyType.AES, 256, store=False,
                                     template={Attribute.WRAP: True})
    with pytest.raises(pkcs11.exceptions.KeyUnextractable):
        other.wrap_key(master, mechanism=Mechanism.AES_KEY_WRAP_PAD)
    vault.stop()


async def test_extractable_master_key_is_refused(softhsm, hsm_session, storage):
    label = f"test-{secrets.token_hex(4)}"
    hsm_session.generate_key(KeyType.AES, 256, label=f"{label}:v1", store=True,
                             template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False})
    await storage.vault_keys.add_master(1, "pkcs11")
    vault = Vault(Pkcs11KeyProvider(softhsm.module, softhsm.label, label, softhsm.pin, "$PIN"),
                  storage.vault_keys, storage.vault_secrets)
    with pytest.raises(VaultError, match="extractable or not sensitive: refusing"):
        await vault.start()


def test_wrong_pin_is_a_clear_error(softhsm):
    provider = Pkcs11KeyProvider(softhsm.module, softhsm.label, "k", "0000-wrong",
                                 "$RELAYFORGE_HSM_PIN")
    with pytest.raises(VaultError) as info:
        provider.open()
    assert str(info.value) == (f"the HSM token {softhsm.label!r} refused the PIN from "
                               "$RELAYFORGE_HSM_PIN: check it")


def test_wrong_token_label_is_named(softhsm):
    provider = Pkcs11KeyProvider(softhsm.module, "no-such-token", "k", softhsm.pin, "$PIN")
    with pytest.raises(VaultError, match=r"vault\.pkcs11\.token_label: no token labelled"):
        provider.open()


def test_key_file_is_private_and_refused_when_not(tmp_path):
    path = tmp_path / "master.key"
    provider = FileKeyProvider(str(path))
    provider.open()
    provider.create_version(1)
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    with pytest.raises(VaultError, match=r"can be read by other users .* chmod 600"):
        FileKeyProvider(str(path)).open()


def test_pin_in_config_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "homeserver: {address: 'http://hs', domain: x.org}\n"
        "appservice: {address: 'http://as', as_token: a, hs_token: h}\n"
        "bridge: {permissions: {'*': user}}\n"
        "vault: {provider: pkcs11, pkcs11: {module: /m.so, token_label: t, key_label: k, "
        "pin: '1234'}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ={})
    assert info.value.problems == ["vault.pkcs11.pin: the PIN must not be in the config; use "
                                   "pin_env (an environment variable name) or pin_file"]


async def test_key_file_from_elsewhere_is_refused_for_a_new_database(tmp_path, db_uri):
    # A key file that already holds keys when the database has no vault was made for another
    # database (or came with a copy of the project): adopting it would seal with a known key.
    path = tmp_path / "master.key"
    old = FileKeyProvider(str(path))
    old.open()
    old.create_version(1)
    storage = await open_database(db_uri)
    try:
        vault = Vault(FileKeyProvider(str(path)), storage.vault_keys, storage.vault_secrets)
        with pytest.raises(VaultError, match=r"vault\.file\.key_path: .* older than the database"):
            await vault.start()
        assert await storage.vault_keys.master_versions() == {}
        path.unlink()
        fresh = Vault(FileKeyProvider(str(path)), storage.vault_keys, storage.vault_secrets)
        await fresh.start()
        fresh.stop()
        # Its own key file opens the same database again after a restart.
        again = Vault(FileKeyProvider(str(path)), storage.vault_keys, storage.vault_secrets)
        await again.start()
        again.stop()
    finally:
        await storage.close()


def test_key_file_tracked_by_git_is_refused(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    path = tmp_path / "master.key"
    FileKeyProvider(str(path)).open()
    FileKeyProvider(str(path)).open()  # untracked inside a work tree: fine
    subprocess.run(["git", "-C", str(tmp_path), "add", "master.key"], check=True)
    with pytest.raises(VaultError, match=r"vault\.file\.key_path: .* is tracked by git"):
        FileKeyProvider(str(path)).open()
