"""The server's half of Telegram's SRP 2FA check (core.telegram.org/api/srp): the fake sends
a challenge and verifies the client's proof M1 with the same maths, so a wrong cloud password
is refused the way Telegram refuses it."""

from __future__ import annotations

import secrets

from telethon import password as srp
from telethon.tl import types

from .mtproto import DH_G, DH_PRIME

_P = DH_PRIME.to_bytes(256, "big")


class SrpServer:
    def __init__(self) -> None:
        self.awaiting: dict[int, int] = {}  # auth key id -> person id asked for a password
        self._challenges: dict[int, tuple[int, int, int, types.TypePasswordKdfAlgo, bytes]] = {}

    @staticmethod
    def no_password() -> types.account.Password:
        return types.account.Password(
            new_algo=types.PasswordKdfAlgoUnknown(),
            new_secure_algo=types.SecurePasswordKdfAlgoUnknown(),
            secure_random=secrets.token_bytes(32), has_password=False)

    def challenge(self, person_id: int, password: str) -> types.account.Password:
        algo = types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow(
            salt1=secrets.token_bytes(40), salt2=secrets.token_bytes(16), g=DH_G, p=_P)
        x = int.from_bytes(srp.compute_hash(algo, password), "big")
        v = pow(DH_G, x, DH_PRIME)
        k = int.from_bytes(srp.sha256(_P, srp.big_num_for_hash(DH_G)), "big")
        b = int.from_bytes(secrets.token_bytes(256), "big")
        big_b = (k * v + pow(DH_G, b, DH_PRIME)) % DH_PRIME
        srp_id = secrets.randbits(62)
        b_bytes = srp.big_num_for_hash(big_b)
        self._challenges[person_id] = (srp_id, v, b, algo, b_bytes)
        return types.account.Password(
            new_algo=algo, new_secure_algo=types.SecurePasswordKdfAlgoUnknown(),
            secure_random=secrets.token_bytes(32), has_password=True, current_algo=algo,
            srp_B=b_bytes, srp_id=srp_id, hint="the test password")

    def verify(self, person_id: int, check: types.InputCheckPasswordSRP) -> bool:
        """Does the client's M1 prove it knows the password behind the verifier?"""
        challenge = self._challenges.pop(person_id, None)
        if challenge is None or not isinstance(check, types.InputCheckPasswordSRP):
            return False
        srp_id, v, b, algo, b_bytes = challenge
        if check.srp_id != srp_id:
            return False
        big_a = int.from_bytes(check.A, "big")
        if not 0 < big_a < DH_PRIME:
            return False
        u = int.from_bytes(srp.sha256(srp.num_bytes_for_hash(check.A), b_bytes), "big")
        s = pow(big_a * pow(v, u, DH_PRIME) % DH_PRIME, b, DH_PRIME)
        k = srp.sha256(srp.big_num_for_hash(s))
        m1 = srp.sha256(srp.xor(srp.sha256(_P), srp.sha256(srp.big_num_for_hash(DH_G))),
                        srp.sha256(algo.salt1), srp.sha256(algo.salt2),
                        srp.num_bytes_for_hash(check.A), b_bytes, k)
        return secrets.compare_digest(m1, check.M1)
