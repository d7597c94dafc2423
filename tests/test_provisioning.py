"""The provisioning API: authenticated every way it accepts, and answers match its OpenAPI."""

from __future__ import annotations

import secrets

import pytest

from .support.api import PREFIX, Api
from .support.oidc import person
from .support.web import Browser
from .test_signin import new_web_account

SECRET = secrets.token_urlsafe(32)


@pytest.fixture
async def api_bridge(start_bridge, oidc_providers):
    idp, corp = oidc_providers["idp"], oidc_providers["corp"]
    # Everyone may use this bridge, accounts made by a web sign-in alone included.
    return await start_bridge(
        permissions={"*": "user"},
        identity={"providers": [idp.provider_config(name="Google"),
                                corp.provider_config(name="GitHub")]},
        extra={"provisioning": {"shared_secret": SECRET}})


@pytest.fixture
async def api(homeserver):
    client = Api(homeserver.appservice_url)
    yield client
    await client.http.close()


async def test_every_endpoint_needs_credentials(api_bridge, api):
    for method, path in (("GET", "/whoami"), ("GET", "/account"), ("POST", "/profiles")):
        status, body = await api.call(method, PREFIX + path,
                                      body={"name": "x"} if method == "POST" else None)
        assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
        status, body = await api.call(method, PREFIX + path, token="not-a-token",
                                      body={"name": "x"} if method == "POST" else None)
        assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")


async def test_shared_secret_acts_for_the_named_user(api_bridge, api, new_user):
    alice = await new_user("alice")
    status, who = await api.call("GET", PREFIX + "/whoami", token=SECRET,
                                 query={"user_id": alice.mxid})
    assert (status, who["matrix_users"]) == (200, [alice.mxid])
    status, _ = await api.call("GET", PREFIX + "/whoami", token=SECRET)  # whom for?
    assert status == 401
    status, _ = await api.call("GET", PREFIX + "/whoami", token=SECRET[:-1] + "x",
                               query={"user_id": alice.mxid})
    assert status == 401


async def test_without_a_configured_secret_nothing_is_a_secret(start_bridge, api, new_user):
    await start_bridge()
    alice = await new_user("alice")
    status, _ = await api.call("GET", PREFIX + "/whoami", token=SECRET,
                               query={"user_id": alice.mxid})
    assert status == 401


async def test_bridge_session_and_matrix_openid_token(api_bridge, api, homeserver, new_user):
    web = Browser(homeserver.appservice_url)
    try:
        login = person("carol")
        await new_web_account(web, "idp", login)
        _, signed_in = await web.sign_in("idp", login)
    finally:
        await web.close()
    session = signed_in["sessionId"]
    status, me = await api.call("GET", PREFIX + "/account", token=session)
    assert status == 200
    assert [p["name"] for p in me["profiles"]] == ["Jobb", "Privat"]
    assert me["identities"][0]["provider"] == "idp"
    status, profile = await api.call("POST", PREFIX + "/profiles", token=session,
                                     body={"name": "Hobby"})
    assert (status, profile["name"]) == (201, "Hobby")
    status, error = await api.call("POST", PREFIX + "/profiles", token=session,
                                   body={"name": "hobby"})
    assert status == 400 and "already have a profile" in error["error"]

    alice = await new_user("alice")
    openid = await alice.client.api.request(
        "POST", f"/_matrix/client/v3/user/{alice.mxid}/openid/request_token", {})
    status, who = await api.call("GET", PREFIX + "/whoami", token=openid["access_token"])
    assert (status, who["matrix_users"]) == (200, [alice.mxid])
    persona_account = await api_bridge.accounts.for_matrix_user(alice.mxid)
    await api_bridge.accounts.add_persona(
        persona_account.id, "Jobb", platform="slack", external_user_id="U1",
        display_name="Alice", scopes=["chat:write"], actor=alice.mxid)
    status, me = await api.call("GET", PREFIX + "/account", token=openid["access_token"])
    [persona] = me["profiles"][0]["personas"]
    assert persona["descriptor"] == {"platform": "slack", "external_user_id": "U1",
                                     "display_name": "Alice", "avatar_hash": None,
                                     "scopes": ["chat:write"], "last_refresh": None}


async def test_linking_and_merge_answers_match_the_document(api_bridge, api, homeserver):
    web = Browser(homeserver.appservice_url)
    try:
        google, github = person("dan-g"), person("dan-gh")
        await new_web_account(web, "idp", google)
        _, pending = await web.sign_in("corp", github)
        _, handoff = await web.sign_in("idp", google, purpose="link")
        body = {"pendingSessionId": pending["pendingSessionId"],
                "existingSessionId": handoff["existingSessionId"]}
        status, _ = await api.call("POST", "/api/account/complete-linking", body=body,
                                   http=web.http)
        assert status == 200
        status, _ = await api.call("POST", "/api/account/complete-linking", body=body,
                                   http=web.http)
        assert status == 400
        status, _ = await api.call("POST", "/api/account/merge",
                                   body={"mergeSessionId": "x"}, http=web.http)
        assert status == 401
        _, signed_in = await web.sign_in("idp", google)
        status, _ = await api.call("POST", "/api/account/merge", token=signed_in["sessionId"],
                                   body={"mergeSessionId": "nope"}, http=web.http)
        assert status == 400
    finally:
        await web.close()


async def openid_token(user) -> str:
    answer = await user.client.api.request(
        "POST", f"/_matrix/client/v3/user/{user.mxid}/openid/request_token", {})
    return answer["access_token"]


async def test_below_user_level_is_refused_everywhere_as_by_the_bot(
        start_bridge, oidc_providers, api, new_user, homeserver):
    """A relay-level person (here: everyone but example.org) may not link or map through
    the API, whether by the shared secret, a Matrix OpenID token or a web sign-in."""
    alice = await new_user("alice")
    bridge = await start_bridge(
        permissions={"*": "relay", "example.org": "user"},
        identity={"providers": [oidc_providers["idp"].provider_config(name="Google")]},
        extra={"provisioning": {"shared_secret": SECRET}})
    # The bot refuses her (as it always did) ...
    dm = await alice.open_dm(homeserver.bot_mxid)
    await alice.wait_for_notice(dm, homeserver.bot_mxid, "not allowed to use this bridge")

    # ... and so does the API, naming the level needed, for every way in.
    web = Browser(homeserver.appservice_url)
    try:
        erin = person("erin")
        await new_web_account(web, "idp", erin)
        _, signed_in = await web.sign_in("idp", erin)
    finally:
        await web.close()
    ways = {"shared secret": (SECRET, {"user_id": alice.mxid}, alice.mxid),
            "openid": (await openid_token(alice), None, alice.mxid),
            "web session": (signed_in["sessionId"], None, "An account without a Matrix user")}
    for way, (token, query, who) in ways.items():
        for method, path, body in (
                ("POST", "/link/loopback", {"identifier": "a1"}),
                ("POST", "/rules", {"network": "loopback", "remote": "room1"}),
                ("GET", "/personas", None), ("GET", "/rules", None)):
            status, error = await api.call(method, PREFIX + path, token=token, query=query,
                                           body=body)
            assert (status, error["errcode"]) == (403, "M_FORBIDDEN"), (way, path, error)
            assert "needs the user permission level" in error["error"], (way, error)
            assert f"{who} has relay" in error["error"], (way, error)
    # Refused before anything was made for her: no account, no rule.
    assert await bridge.storage.db.fetchval(
        "SELECT COUNT(*) FROM account_matrix_user WHERE mxid=$1", alice.mxid) == 0
    assert await bridge.storage.db.fetchval("SELECT COUNT(*) FROM mapping_rule") == 0


async def test_shared_secret_user_must_be_on_an_allowed_server(start_bridge, api, new_user):
    alice = await new_user("alice")
    await start_bridge(permissions={"localhost": "user"},
                       extra={"provisioning": {"shared_secret": SECRET}})
    for user_id, says in (("@eve:evil.example", "not on a server bridge.permissions allows"),
                          ("@eve:localhost.evil.example", "not on a server"),
                          ("eve", "must be a Matrix user ID"),
                          ("@eve:local host", "must be a Matrix user ID"),
                          ("@:localhost", "must be a Matrix user ID")):
        status, error = await api.call("GET", PREFIX + "/whoami", token=SECRET,
                                       query={"user_id": user_id})
        assert (status, error["errcode"]) == (403, "M_FORBIDDEN"), (user_id, error)
        assert says in error["error"], (user_id, error)
    status, who = await api.call("GET", PREFIX + "/whoami", token=SECRET,
                                 query={"user_id": alice.mxid})
    assert (status, who["matrix_users"]) == (200, [alice.mxid])
