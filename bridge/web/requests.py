"""One request-parsing layer for every HTTP surface: the provisioning API, the sign-in APIs and
pages, the admin pages and the connectors' webhooks.

- Bodies: only the content types an endpoint documents (415 otherwise), a charset that is
  UTF-8 or none, strict UTF-8, a bounded nesting depth, no NaN/Infinity, and no NUL or lone
  surrogate in any string (key or value): such text cannot be stored, hashed or sent on.
- Every request: its path, query and header values are strict UTF-8 without NUL (a query
  parameter or a bearer token reaches the database and the hashes as well).
- Each refusal is a 4xx with a Matrix-style `{"errcode", "error"}` body, or the styled page
  for the pages people's browsers show.
- Anything a handler did not expect becomes a 500 naming a correlation id, which the log
  line (with the traceback) carries too, and counts in `relayforge_http_server_errors`.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web

from ..metrics import Metrics
from . import pages

log = logging.getLogger("relayforge.web.requests")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
# The bridge's own bodies are two or three levels deep; Slack's events about six.
MAX_DEPTH = 16
# The forms are a handful of fields; a body of thousands is not a browser's.
MAX_FORM_FIELDS = 50
# Pages a browser shows: their refusals are the styled error page, unless JSON is asked for.
PAGE_PREFIXES = ("/auth/", "/oauth/", "/link/", "/account", "/admin/")
# Machine clients' paths: JSON refusals whatever the Accept header says.
_API_PREFIXES = ("/_matrix/", "/api/", "/mcp", "/.well-known/", "/metrics")
_UTF8_NAMES = ("utf-8", "utf8")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class BadRequest(Exception):
    """A request refused for what it is (not for who sent it): a 4xx naming what is wrong."""

    def __init__(self, status: int, errcode: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message


def check_text(value: str, where: str) -> str:
    """`value` when it can be stored and hashed: no NUL, no lone surrogate."""
    if "\x00" in value:
        raise BadRequest(400, "M_BAD_JSON", f"{where} contains a NUL character.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(400, "M_BAD_JSON", f"{where} contains a lone surrogate (not "
                         "Unicode text).") from None
    return value


def _check_strings(value: Any, where: str) -> None:
    # Bounded by MAX_DEPTH, checked before parsing, so the recursion is too.
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, f"A key in {where}")
            _check_strings(item, f"{where}.{key}" if len(where) < 80 else where)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item, where)


def _depth(text: str) -> int:
    deepest = depth = 0
    for bracket in _BRACKET.finditer(_STRING.sub('""', text)):
        depth += 1 if bracket.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def decode_utf8(raw: bytes, what: str = "The body") -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(400, "M_NOT_JSON" if what == "The body" else "M_INVALID_PARAM",
                         f"{what} is not UTF-8 (byte {e.start}).") from None


def parse_json(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """A JSON document from raw bytes, or BadRequest: strict UTF-8, nested at most
    `max_depth` levels (checked before parsing: deep nesting exhausts the parser's stack),
    only finite numbers, and text that can be stored."""
    text = decode_utf8(raw)
    if _depth(text) > max_depth:
        raise BadRequest(400, "M_NOT_JSON", f"The body is nested deeper than {max_depth} "
                         "levels.")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise BadRequest(400, "M_NOT_JSON", f"The body is not JSON: {e}") from None
    _check_strings(value, "The body")
    return value


def content_type(request: web.Request, allowed: tuple[str, ...]) -> str:
    """The request's content type when the endpoint documents it (and its charset, if any,
    is UTF-8); 415 otherwise."""
    kind = request.content_type
    if kind not in allowed:
        raise BadRequest(415, "RF_UNSUPPORTED_MEDIA_TYPE",
                         f"Content-Type must be {' or '.join(allowed)}, not "
                         f"{kind or 'missing'}.")
    charset = request.charset
    if charset is not None and charset.lower() not in _UTF8_NAMES:
        raise BadRequest(415, "RF_UNSUPPORTED_MEDIA_TYPE",
                         f"charset must be utf-8, not {charset[:40]!r}.")
    return kind


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body of a JSON endpoint: a JSON object, or a refusal saying what is wrong."""
    content_type(request, (JSON,))
    body = parse_json(await request.read())
    if not isinstance(body, dict):
        raise BadRequest(400, "M_BAD_JSON", "The body must be a JSON object.")
    return body


def parse_form(raw: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body: strict UTF-8 after percent-decoding,
    storable text, a bounded number of fields; the first of a repeated field counts."""
    fields: dict[str, str] = {}
    text = decode_utf8(raw, "The form")
    if not text:
        return fields
    parts = text.split("&")
    if len(parts) > MAX_FORM_FIELDS:
        raise BadRequest(400, "M_INVALID_PARAM", f"The form has more than {MAX_FORM_FIELDS} "
                         "fields.")
    for part in parts:
        if not part:
            continue
        name, _, value = part.partition("=")
        name, value = (_unquote(x, "A form field") for x in (name, value))
        fields.setdefault(name, value)
    return fields


def _unquote(value: str, what: str) -> str:
    decoded = decode_utf8(unquote_to_bytes(value.replace("+", " ")), what)
    if "\x00" in decoded:
        raise BadRequest(400, "M_INVALID_PARAM", f"{what} contains a NUL character.")
    return decoded


async def form_fields(request: web.Request) -> dict[str, str]:
    """The fields of one of the bridge's own forms (urlencoded, as browsers send them)."""
    content_type(request, (FORM,))
    return parse_form(await request.read())


async def json_or_form(request: web.Request) -> tuple[dict[str, Any], bool]:
    """For endpoints that take both (an API call or a page's form): the fields, and whether
    they came as JSON."""
    if content_type(request, (JSON, FORM)) == JSON:
        return await json_object(request), True
    return parse_form(await request.read()), False


def wants_page(request: web.Request) -> bool:
    """Whether a refusal is shown as a page (a browser's request) rather than JSON: on the
    pages' paths, and anywhere but the APIs for a browser that asks for HTML."""
    accept = request.headers.get("Accept", "")
    if "application/json" in accept or request.content_type == JSON:
        return False
    if request.path.startswith(PAGE_PREFIXES) or request.path == "/":
        return True
    return "text/html" in accept and not request.path.startswith(_API_PREFIXES)


def refusal(request: web.Request, status: int, errcode: str, message: str,
            headers: dict[str, str] | None = None) -> web.Response:
    """A refusal as this request's client reads it: the styled page, or Matrix-style JSON."""
    if wants_page(request):
        return web.Response(text=pages.error_page(message, status=status), status=status,
                            content_type="text/html", charset="utf-8", headers=headers)
    body: dict[str, Any] = {"errcode": errcode, "error": message}
    if request.path.startswith("/api/"):
        body["success"] = False  # the sign-in APIs' own shape
    return web.json_response(body, status=status, headers=headers)


def check_request_line(request: web.Request) -> None:
    """The path, query and header values: strict UTF-8, no NUL (they reach the database,
    hashes and logs as text)."""
    if "\x00" in request.path:
        raise BadRequest(400, "M_INVALID_PARAM", "The path contains a NUL character.")
    try:
        request.path.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(400, "M_INVALID_PARAM", "The path is not UTF-8.") from None
    # The raw query (aiohttp's decoded one would be decoded twice here): every name and
    # value strict UTF-8 once percent-decoded (aiohttp would pass U+FFFD on silently).
    for part in request.raw_path.partition("?")[2].split("&"):
        for piece in part.split("=", 1):
            _unquote(piece, "A query parameter")
    for name, value in request.headers.items():
        if "\x00" in value:
            raise BadRequest(400, "M_INVALID_PARAM", f"The {name[:40]} header contains a NUL "
                             "character.")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(400, "M_INVALID_PARAM", f"The {name[:40]} header is not "
                             "UTF-8.") from None


# aiohttp's own plain-text refusals (no route, wrong method, body too large, a form's CSRF
# check): the same shapes as the bridge's.
_ERRCODES = {401: "M_UNAUTHORIZED", 403: "M_FORBIDDEN", 404: "M_UNRECOGNIZED",
             405: "M_UNRECOGNIZED", 413: "M_TOO_LARGE", 415: "RF_UNSUPPORTED_MEDIA_TYPE",
             429: "M_LIMIT_EXCEEDED"}
_KEPT_HEADERS = ("Allow", "Retry-After", "Location", "WWW-Authenticate")


def _restyled(request: web.Request, error: web.HTTPException) -> web.StreamResponse | None:
    if error.status < 400 or error.content_type != "text/plain":
        return None
    message = error.text or error.reason
    if message.startswith(f"{error.status}: "):
        message = message.split(": ", 1)[1]
    headers = {k: v for k, v in error.headers.items() if k in _KEPT_HEADERS}
    response = refusal(request, error.status, _ERRCODES.get(error.status, "M_UNKNOWN"),
                       message, headers)
    for name, morsel in error.cookies.items():
        response.cookies[name] = morsel
    return response


class RequestGuard:
    """The middleware: refuses malformed requests before any handler, renders BadRequest,
    and turns an unexpected exception into a 500 with a correlation id."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            check_request_line(request)
            return await handler(request)
        except BadRequest as e:
            return refusal(request, e.status, e.errcode, e.message)
        except web.HTTPException as e:
            restyled = _restyled(request, e)
            if restyled is None:
                raise
            return restyled
        except Exception:
            return self._server_error(request)

    def _server_error(self, request: web.Request) -> web.Response:
        correlation = secrets.token_hex(8)
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        # The path only: a query can hold a login link's token.
        log.exception("Unexpected error in %s %s (correlation id %s)", request.method,
                      request.path, correlation)
        if self.metrics is not None:
            self.metrics.http_server_errors.labels(route=name).inc()
        message = ("The bridge hit an unexpected error; the admin can find it in the log by "
                   f"correlation id {correlation}.")
        headers = {"X-Correlation-Id": correlation}
        if wants_page(request):
            return refusal(request, 500, "M_UNKNOWN", message, headers)
        return web.json_response({"errcode": "M_UNKNOWN", "error": message,
                                  "correlation_id": correlation}, status=500, headers=headers)
