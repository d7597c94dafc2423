"""A real SoftHSM2 token for the session, in a temporary directory."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import attrs

from .servers import unavailable

SOFTHSM_MODULES = ("/usr/lib/softhsm/libsofthsm2.so",
                   "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                   "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so")


@attrs.frozen
class SoftHsmToken:
    module: str
    label: str
    pin: str
    so_pin: str


def create_token(directory: Path) -> SoftHsmToken:
    util = shutil.which("softhsm2-util")
    module = next((m for m in SOFTHSM_MODULES if os.path.exists(m)), None)
    if util is None or module is None:
        unavailable("SoftHSM2 is not installed (Debian package softhsm2)")
    (directory / "tokens").mkdir(parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {directory / 'tokens'}\n"
                    "objectstore.backend = file\nlog.level = ERROR\n")
    # The PKCS#11 library reads this when it is first loaded, once per process.
    os.environ["SOFTHSM2_CONF"] = str(conf)
    token = SoftHsmToken(module, "relayforge-test", secrets.token_hex(4), secrets.token_hex(4))
    subprocess.run([util, "--init-token", "--free", "--label", token.label,
                    "--so-pin", token.so_pin, "--pin", token.pin],
                   check=True, capture_output=True)
    return token
