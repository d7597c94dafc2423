"""The OpenAPI document of the provisioning API, served at /_matrix/provision/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from .. import __version__

_ERROR = {"type": "object", "required": ["error"],
          "properties": {"errcode": {"type": "string"}, "error": {"type": "string"},
                         "success": {"type": "boolean"},
                         "correlation_id": {"type": "string"}}}
_FLOW_ERROR = {"type": "object", "required": ["success", "error"],
               "properties": {"success": {"type": "boolean", "enum": [False]},
                              "error": {"type": "string"}}}
_DESCRIPTOR = {
    "type": "object",
    "required": ["platform", "external_user_id", "display_name", "avatar_hash", "scopes",
                 "last_refresh"],
    "properties": {
        "platform": {"type": "string"}, "external_user_id": {"type": "string"},
        "display_name": {"type": ["string", "null"]},
        "avatar_hash": {"type": ["string", "null"]},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "last_refresh": {"type": ["string", "null"]},
    },
}
_PERSONA = {"type": "object", "required": ["id", "status", "descriptor"],
            "properties": {"id": {"type": "string"},
                           "status": {"type": "string", "enum": [
                               "active", "paused", "read_only", "needs_reauth", "revoked"]},
                           "descriptor": _DESCRIPTOR}}
_PROFILE = {"type": "object", "required": ["id", "name", "space", "personas"],
            "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                           "space": {"type": ["string", "null"]},
                           "personas": {"type": "array", "items": _PERSONA}}}
_ACCOUNT = {
    "type": "object",
    "required": ["account_id", "status", "credits", "matrix_users", "identities", "profiles"],
    "properties": {
        "account_id": {"type": "string"}, "status": {"type": "string"},
        "credits": {"type": "integer"},
        "matrix_users": {"type": "array", "items": {"type": "string"}},
        "identities": {"type": "array", "items": {
            "type": "object", "required": ["provider", "issuer", "email", "email_verified"],
            "properties": {"provider": {"type": "string"}, "issuer": {"type": "string"},
                           "email": {"type": ["string", "null"]},
                           "email_verified": {"type": "boolean"}}}},
        "profiles": {"type": "array", "items": _PROFILE},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_UNAUTHORIZED = _json(_ERROR, "No or unknown credentials; errcode RF_SESSION_NETWORK_CHANGED "
                      "when the session was used from another network and was ended (sign in "
                      "again)")
_FORBIDDEN = _json(_ERROR, "errcode M_FORBIDDEN: the acting Matrix user lacks the level "
                   "bridge.permissions gives for this action (the error names it), the shared "
                   "secret's user_id is not a Matrix user ID on a server the permissions "
                   "allow, or (rules) the person may not change the target_room")
_LIMITED = _json({"type": "object", "required": ["errcode", "error", "retry_after_ms"],
                  "properties": {"errcode": {"type": "string", "enum": ["M_LIMIT_EXCEEDED"]},
                                 "error": {"type": "string"},
                                 "retry_after_ms": {"type": "integer"}}},
                 "Too many requests from this client network or for this account (or too "
                 "many refused tokens); the Retry-After header says when to try again")
# What every endpoint may answer, whatever it does: the request parsing layer's refusals
# (bridge/web/requests.py) and an unexpected error.
_MALFORMED = _json(_ERROR, "A malformed request, the error says what is wrong: errcode "
                   "M_NOT_JSON (a body that is not JSON, not UTF-8, or nested deeper than 16 "
                   "levels), M_BAD_JSON (a JSON body of the wrong shape, or text with a NUL "
                   "character or a lone surrogate), M_INVALID_PARAM (a path, query parameter, "
                   "header or form field that is not UTF-8 or holds a NUL character, or a "
                   "value the endpoint refuses)")
_UNSUPPORTED = _json(_ERROR, "errcode RF_UNSUPPORTED_MEDIA_TYPE: the body's Content-Type is "
                     "not one this endpoint documents, or its charset is not utf-8")
_UNAVAILABLE = _json(_ERROR, "The bridge is starting, or the homeserver did not answer a "
                     "look-up the request needs; try again shortly")
_SERVER_ERROR = _json(_ERROR, "An unexpected error (a bug): errcode M_UNKNOWN, and "
                      "correlation_id (also in the X-Correlation-Id header) names the log line "
                      "the admin can look up")


def common_responses(has_body: bool) -> dict[str, Any]:
    """The answers any endpoint may give besides its own (malformed input, starting up,
    an unexpected error); 415 where it takes a body."""
    return {"400": _MALFORMED, **({"415": _UNSUPPORTED} if has_body else {}),
            "500": _SERVER_ERROR, "503": _UNAVAILABLE}


_USER_ID = [{"name": "user_id", "in": "query", "required": False,
             "schema": {"type": "string"}}]
_STEP = {"type": "object", "required": ["done", "flow_id", "message", "fields", "url", "qr"],
         "properties": {
             "done": {"type": "boolean", "enum": [False]}, "flow_id": {"type": "string"},
             "message": {"type": "string"},
             "fields": {"type": "array", "items": {
                 "type": "object", "required": ["name", "label", "secret"],
                 "properties": {"name": {"type": "string"}, "label": {"type": "string"},
                                "secret": {"type": "boolean"}}}},
             "url": {"type": ["string", "null"]}, "qr": {"type": ["string", "null"]}}}
_LISTED_PERSONA = {"type": "object", "required": ["id", "profile", "status", "descriptor"],
                   "properties": {"id": {"type": "string"}, "profile": {"type": "string"},
                                  "status": {"type": "string"}, "descriptor": _DESCRIPTOR}}
_RULE = {"type": "object",
         "required": ["id", "profile", "network", "remote", "target_room", "inbound_only",
                      "relay"],
         "properties": {"id": {"type": "string"}, "profile": {"type": "string"},
                        "network": {"type": "string"}, "remote": {"type": "string"},
                        "target_room": {"type": ["string", "null"]},
                        "inbound_only": {"type": "boolean"}, "relay": {"type": "boolean"}}}


def _op(summary: str, responses: dict[str, Any], body: dict[str, Any] | None = None,
        path_params: tuple[str, ...] = (), enums: dict[str, list[str]] | None = None
        ) -> dict[str, Any]:
    enums = enums or {}
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": _USER_ID + [{"name": p, "in": "path", "required": True,
                                   "schema": {"type": "string", **(
                                       {"enum": enums[p]} if p in enums else {})}}
                                  for p in path_params],
        "responses": {**common_responses(body is not None), **responses,
                      "401": _UNAUTHORIZED, "403": _FORBIDDEN, "429": _LIMITED},
    }
    if body is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": body}}}
    return operation


_OPT_TEXT = {"type": ["string", "null"]}
_HOLD = {"type": "object",
         "required": ["name", "scope", "network", "target", "from", "until", "reason",
                      "created_by", "created_at", "released_by", "released_at", "active"],
         "properties": {"name": {"type": "string"},
                        "scope": {"type": "string",
                                  "enum": ["account", "user", "room", "workspace"]},
                        "network": _OPT_TEXT, "target": {"type": "string"},
                        "from": _OPT_TEXT, "until": _OPT_TEXT, "reason": _OPT_TEXT,
                        "created_by": {"type": "string"}, "created_at": {"type": "string"},
                        "released_by": _OPT_TEXT, "released_at": _OPT_TEXT,
                        "active": {"type": "boolean"}, "messages": {"type": "integer"}}}


def _hold_paths() -> dict[str, Any]:
    """Legal holds (admins: the "holds" level of bridge.permissions)."""
    v1 = "/_matrix/provision/v1"
    bad = _json(_ERROR, "Refused; the error names the field that is wrong")
    return {
        f"{v1}/holds": {
            "get": _op("Legal holds, with how many messages each keeps (audited)", {
                "200": _json({"type": "object", "required": ["holds"], "properties": {
                    "holds": {"type": "array", "items": _HOLD}}}, "Holds")}),
            "post": _op(
                "Put a legal hold on a custodian (account or Matrix user), a room or a "
                "workspace, optionally for a date range (ISO dates, UTC)",
                {"201": _json(_HOLD, "The hold"), "400": bad},
                body={"type": "object", "required": ["name", "scope", "target"],
                      "properties": {"name": {"type": "string"},
                                     "scope": {"type": "string", "enum": [
                                         "account", "user", "room", "workspace"]},
                                     "target": {"type": "string"},
                                     "network": {"type": "string"},
                                     "from": {"type": "string"}, "until": {"type": "string"},
                                     "reason": {"type": "string"}}})},
        f"{v1}/holds/{{name}}/release": {"post": _op(
            "Release a legal hold (what it kept stays until retention removes it)",
            {"200": _json(_HOLD, "The released hold"), "400": bad,
             "404": _json(_ERROR, "No such hold")}, path_params=("name",))},
    }


def _network_paths() -> dict[str, Any]:
    v1 = "/_matrix/provision/v1"
    bad = _json(_ERROR, "Refused; the error says why")
    return {
        f"{v1}/networks": {"get": _op("Networks and their login flows", {"200": _json({
            "type": "object", "required": ["networks"], "properties": {"networks": {
                "type": "array", "items": {"type": "object",
                                           "required": ["name", "login_flows"],
                                           "properties": {"name": {"type": "string"},
                                                          "login_flows": {
                                                              "type": "array", "items": {
                                                                  "type": "string"}}}}}}},
            "Networks")})},
        f"{v1}/link/{{network}}": {"post": _op(
            "Start linking an account: answers the first step (for OAuth networks its url is "
            "the bridge's start page, to open in the person's browser)",
            {"200": _json(_STEP, "The first step"), "400": bad},
            body={"type": "object", "properties": {"identifier": {"type": "string"},
                                                   "profile": {"type": "string"}}},
            path_params=("network",))},
        f"{v1}/link/steps/{{flow_id}}": {"post": _op(
            "Answer a step: the next step, or the linked persona",
            {"200": _json({"oneOf": [_STEP, {
                "type": "object", "required": ["done", "verified", "persona"],
                "properties": {"done": {"type": "boolean", "enum": [True]},
                               "verified": {"type": "array", "items": {"type": "string"}},
                               "persona": _LISTED_PERSONA}}]}, "Next step or done"),
             "400": bad},
            body={"type": "object", "required": ["answers"], "properties": {"answers": {
                "type": "object", "additionalProperties": {"type": "string"}}}},
            path_params=("flow_id",)),
            "get": _op(
                "After an OAuth step: the step that followed once the browser came back "
                "from the network's page (MFA or consent)",
                {"200": _json(_STEP, "The next step"),
                 "404": _json(_ERROR, "The browser has not come back yet")},
                path_params=("flow_id",))},
        f"{v1}/personas": {"get": _op("Linked accounts", {"200": _json({
            "type": "object", "required": ["personas"],
            "properties": {"personas": {"type": "array", "items": _LISTED_PERSONA}}},
            "Personas")})},
        f"{v1}/personas/{{persona_id}}": {"delete": _op(
            "Unlink an account and destroy its credentials",
            {"200": _json({"type": "object", "required": ["unlinked"],
                           "properties": {"unlinked": {"type": "string"}}}, "Unlinked"),
             "404": _json(_ERROR, "No such persona")}, path_params=("persona_id",))},
        f"{v1}/personas/{{persona_id}}/{{action}}": {"post": _op(
            "Pause, resume or revoke a linked account (action: pause | resume | revoke)",
            {"200": _json(_LISTED_PERSONA, "The persona, with its new status"),
             "400": bad, "404": _json(_ERROR, "No such persona or action")},
            path_params=("persona_id", "action"),
            enums={"action": ["pause", "resume", "revoke"]})},
        f"{v1}/rules": {
            "get": _op("Mapping rules", {"200": _json({
                "type": "object", "required": ["rules"],
                "properties": {"rules": {"type": "array", "items": _RULE}}}, "Rules")}),
            "post": _op("Map a remote room into a profile",
                        {"201": _json(_RULE, "The rule"), "400": bad},
                        body={"type": "object", "required": ["network", "remote"],
                              "properties": {"network": {"type": "string"},
                                             "remote": {"type": "string"},
                                             "profile": {"type": "string"},
                                             "target_room": {"type": "string"},
                                             "inbound_only": {"type": "boolean"},
                                             "relay": {"type": "boolean"}}})},
        f"{v1}/rules/{{rule_id}}": {"delete": _op(
            "Remove a mapping rule",
            {"200": _json({"type": "object", "required": ["removed"],
                           "properties": {"removed": {"type": "string"}}}, "Removed"),
             "404": _json(_ERROR, "No such rule")}, path_params=("rule_id",))},
    }
_LINKING_BODY = {"type": "object", "required": ["pendingSessionId", "existingSessionId"],
                 "properties": {"pendingSessionId": {"type": "string"},
                                "existingSessionId": {"type": "string"}}}
_SECURITY = [{"sharedSecret": []}, {"bridgeSession": []}, {"matrixOpenId": []}]


_MY_DATA = {
    "type": "object",
    "required": ["generated_at", "account", "profiles", "rules", "capabilities", "agents",
                 "audit"],
    "properties": {
        "generated_at": {"type": "string"},
        "account": {"type": "object",
                    "required": ["id", "status", "matrix_users", "sign_in_methods", "mfa"],
                    "properties": {"id": {"type": "string"}, "status": {"type": "string"},
                                   "matrix_users": {"type": "array",
                                                    "items": {"type": "string"}},
                                   "sign_in_methods": {"type": "array",
                                                       "items": {"type": "object"}},
                                   "mfa": {"type": "object"}}},
        "profiles": {"type": "array", "items": {
            "type": "object", "required": ["id", "name", "personas"],
            "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                           "personas": {"type": "array", "items": _PERSONA}}}},
        "rules": {"type": "array", "items": {"type": "object"}},
        "capabilities": {"type": "array", "items": {"type": "object"}},
        "agents": {"type": "array", "items": {"type": "object"}},
        "audit": {"type": "array", "items": {
            "type": "object", "required": ["seq", "ts", "event", "actor", "details"],
            "properties": {"seq": {"type": "integer"}, "ts": {"type": "string"},
                           "event": {"type": "string"}, "actor": {"type": "string"},
                           "details": {"type": "object"}}}},
    },
}


def _my_data_path() -> dict[str, Any]:
    return {"/_matrix/provision/v1/my-data": {"get": _op(
        "Everything the bridge holds about the person, as the bot's my-data: account, "
        "sign-in methods, profiles, personas (descriptors, never credentials), rules, "
        "capabilities, agents and their audit records",
        {"200": _json(_MY_DATA, "The person's data")})}}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "RelayForge provisioning API", "version": __version__,
                 "description": "Accounts, profiles and linking. Every endpoint needs "
                                "authentication: the shared secret (with ?user_id= for "
                                "trusted integrations), a bridge session, or a Matrix OpenID "
                                "token, each as `Authorization: Bearer <token>`."},
        "components": {"securitySchemes": {
            "sharedSecret": {"type": "http", "scheme": "bearer",
                             "description": "provisioning.shared_secret plus ?user_id="},
            "bridgeSession": {"type": "http", "scheme": "bearer",
                              "description": "a session id from signing in"},
            "matrixOpenId": {"type": "http", "scheme": "bearer",
                             "description": "an OpenID token from the person's homeserver"},
        }},
        "security": _SECURITY,
        "paths": {
            "/_matrix/provision/v1/whoami": {"get": {
                "summary": "Who the credentials belong to",
                "parameters": [{"name": "user_id", "in": "query", "required": False,
                                "schema": {"type": "string"}}],
                "responses": {
                    "200": _json({"type": "object", "required": ["account_id", "matrix_users"],
                                  "properties": {"account_id": {"type": "string"},
                                                 "matrix_users": {"type": "array",
                                                                  "items": {"type": "string"}}}},
                                 "The account"),
                    **common_responses(False),
                    "401": _UNAUTHORIZED, "403": _FORBIDDEN, "429": _LIMITED}}},
            "/_matrix/provision/v1/account": {"get": {
                "summary": "The account: Matrix users, sign-in methods, profiles, personas",
                "parameters": [{"name": "user_id", "in": "query", "required": False,
                                "schema": {"type": "string"}}],
                "responses": {**common_responses(False),
                              "200": _json(_ACCOUNT, "The account"), "401": _UNAUTHORIZED,
                              "403": _FORBIDDEN, "429": _LIMITED}}},
            "/_matrix/provision/v1/profiles": {"post": {
                "summary": "Create a profile (it gets a Matrix space)",
                "parameters": [{"name": "user_id", "in": "query", "required": False,
                                "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["name"],
                    "properties": {"name": {"type": "string", "minLength": 1,
                                            "maxLength": 40}}}}}},
                "responses": {**common_responses(True),
                              "201": _json(_PROFILE, "The new profile"),
                              "400": _json(_ERROR, "Malformed (see the other endpoints), a "
                                           "bad name, the name is taken, or the account has "
                                           "identity.max_profiles profiles already"),
                              "401": _UNAUTHORIZED, "403": _FORBIDDEN, "429": _LIMITED}}},
            "/api/account/complete-linking": {"post": {
                "summary": "Link a pending sign-in to the account just signed in to",
                "security": [],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _LINKING_BODY},
                    # The confirmation page's form (with its csrf field); answered with a page.
                    "application/x-www-form-urlencoded": {"schema": _LINKING_BODY}}},
                "responses": {
                    **common_responses(True),
                    "200": _json({"type": "object", "required": ["success", "message"],
                                  "properties": {"success": {"type": "boolean"},
                                                 "message": {"type": "string"}}}, "Linked"),
                    "400": _json(_FLOW_ERROR, "Malformed, or expired, reused or foreign "
                                 "sessions"),
                    "403": _json(_FLOW_ERROR, "A form without this browser's csrf token or "
                                 "from another site"),
                    "429": _LIMITED}}},
            "/api/account/merge": {"post": {
                "summary": "Merge the account of mergeSessionId into the signed-in account",
                "security": [{"bridgeSession": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["mergeSessionId"],
                    "properties": {"mergeSessionId": {"type": "string"}}}}}},
                "responses": {
                    **common_responses(True), "429": _LIMITED,
                    "200": _json({"type": "object",
                                  "required": ["success", "creditsMerged", "providersAdded"],
                                  "properties": {"success": {"type": "boolean"},
                                                 "creditsMerged": {"type": "integer"},
                                                 "providersAdded": {"type": "array",
                                                                    "items": {"type": "string"}}}},
                                 "Merged"),
                    "400": _json(_FLOW_ERROR, "Malformed (checked only for a valid "
                                 "session), or an expired or reused merge session"),
                    "401": _json(_FLOW_ERROR, "No session"),
                    "403": _json(_FLOW_ERROR, "The session is not valid (checked before the "
                                 "body is read)")}}},
            **_network_paths(),
            **_hold_paths(),
            **_my_data_path(),
        },
    }
