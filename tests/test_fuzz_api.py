"""schemathesis against the served OpenAPI document of a bridge on real Synapse, with XMPP on
and a linked account: with a valid session, a wrong token and none, 0 server errors, every
answer in its documented status and schema.

The number of examples per operation is bounded for CI (RELAYFORGE_FUZZ_EXAMPLES, default
20); a release check runs more (see the README). RELAYFORGE_FUZZ_SEED repeats a run.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sys
from pathlib import Path

from .support.api import PREFIX, Api
from .test_xmpp import MUC

SECRET = secrets.token_urlsafe(32)
EXAMPLES = int(os.environ.get("RELAYFORGE_FUZZ_EXAMPLES", "20"))
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
# High enough that the fuzzer is never limited (the limits have tests of their own).
_UNLIMITED = {"burst": 1_000_000, "per_minute": 1_000_000}


def fuzz_config(path: Path, values: dict[str, list[str]]) -> Path:
    """A schemathesis.toml that sometimes uses real values (the linked persona, the enabled
    network, the person's profiles), so requests get past "no such thing" to the logic."""
    lines = []
    for name, entries in values.items():
        quoted = ", ".join(f'"{v}"' for v in entries)
        lines += [f"[dictionaries.{name}]", f"values = [{quoted}]", ""]
    lines += ["[parameters]"]
    for key, name in (("path.network", "networks"), ("body.network", "networks"),
                      ("path.persona_id", "personas"), ("body.profile", "profiles"),
                      ("body.identifier", "jids"), ("body.remote", "rooms"),
                      ("path.action", "actions"), ("path.rule_id", "rules"),
                      ("query.user_id", "users")):
        lines.append(f'"{key}" = {{ dictionary = "{name}", probability = 0.5 }}')
    path.write_text("\n".join(lines) + "\n")
    return path


async def schemathesis(base: str, config: Path, headers: list[str], seed: int
                       ) -> tuple[int, str]:
    st = Path(sys.executable).with_name("st")
    args = [str(st), "--config-file", str(config), "run", f"{base}{PREFIX}/openapi.json",
            "--url", base, "--checks", CHECKS, "--max-examples", str(EXAMPLES),
            "--seed", str(seed), "--generation-database", "none", "--no-color",
            "--workers", "1", "--request-timeout", "30",
            "--phases", "examples,coverage,fuzzing"]
    for header in headers:
        args += ["-H", header]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=config.parent)
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")


async def link_xmpp(api: Api, user_id: str, peer) -> str:
    me = {"user_id": user_id}
    status, step = await api.call("POST", f"{PREFIX}/link/xmpp", token=SECRET, query=me,
                                  body={"identifier": peer.jid, "profile": "Jobb"})
    assert status == 200, step
    status, consent = await api.call("POST", f"{PREFIX}/link/steps/{step['flow_id']}",
                                     token=SECRET, query=me,
                                     body={"answers": {"password": peer.password}})
    assert status == 200, consent
    status, done = await api.call("POST", f"{PREFIX}/link/steps/{consent['flow_id']}",
                                  token=SECRET, query=me, body={"answers": {"consent": "yes"}})
    assert status == 200 and done["done"] is True, done
    return done["persona"]["id"]


async def test_fuzzed_api_never_answers_a_server_error(start_bridge, prosody, new_user,
                                                       xmpp_peer, homeserver, tmp_path):
    bridge = await start_bridge(
        permissions={"*": "user"},
        identity={"max_profiles": 5},
        extra={"networks": {"xmpp": {"enabled": True, "ca_file": str(prosody.ca),
                                     "nameserver": prosody.nameserver}},
               "provisioning": {"shared_secret": SECRET},
               "security": {"rate_limits": {
                   name: _UNLIMITED for name in ("web", "provisioning_network",
                                                 "provisioning_account", "unknown_tokens")}}})
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    muc = f"fuzz{bob.nick}@{MUC}"
    await bob.join(muc)
    api = Api(homeserver.appservice_url)
    try:
        persona = await link_xmpp(api, alice.mxid, alice_xmpp)
        status, rule = await api.call("POST", f"{PREFIX}/rules", token=SECRET,
                                      query={"user_id": alice.mxid},
                                      body={"network": "xmpp", "remote": muc})
        assert status == 201, rule
    finally:
        await api.http.close()
    openid = await alice.client.api.request(
        "POST", f"/_matrix/client/v3/user/{alice.mxid}/openid/request_token", {})
    config = fuzz_config(tmp_path / "schemathesis.toml", {
        "networks": ["xmpp"], "personas": [persona], "profiles": ["Jobb", "Privat"],
        "jids": [alice_xmpp.jid], "rooms": [muc], "actions": ["pause", "resume", "revoke"],
        "rules": [rule["id"]],
        # For the shared secret: the person, the bot, a ghost, an unregistered user.
        "users": [alice.mxid, homeserver.bot_mxid, f"@xmpp_x:{alice.mxid.split(':')[1]}",
                  f"@nobody:{alice.mxid.split(':')[1]}"]})
    db = bridge.storage.db
    accounts_before = await db.fetchval("SELECT count(*) FROM account")
    seed = int(os.environ.get("RELAYFORGE_FUZZ_SEED") or secrets.randbelow(2**31))
    base = homeserver.appservice_url
    server_errors = bridge.metrics.http_server_errors
    for who, headers in (("a valid session", [f"Authorization: Bearer {openid['access_token']}"]),
                         ("the shared secret", [f"Authorization: Bearer {SECRET}"]),
                         ("a wrong token", ["Authorization: Bearer not-a-known-token"]),
                         ("no token", [])):
        code, output = await schemathesis(base, config, headers, seed)
        summary = output.strip().splitlines()[-1] if output.strip() else ""
        print(f"schemathesis with {who} (seed {seed}): {summary}")
        if os.environ.get("RELAYFORGE_FUZZ_LOG"):
            Path(os.environ["RELAYFORGE_FUZZ_LOG"]).open("a").write(output)
        assert code == 0, f"with {who} (seed {seed}):\n{output[-6000:]}"
        assert re.search(r"\b[1-9]\d* generated\b", output), output[-3000:]
    # Nobody but people who exist got an account (alice already had hers).
    assert await db.fetchval("SELECT count(*) FROM account") == accounts_before
    # No handler hit an unexpected error the fuzzer did not see either.
    assert all(sample.value == 0 for metric in server_errors.collect()
               for sample in metric.samples if sample.name.endswith("_total"))
