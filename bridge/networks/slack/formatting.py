"""Slack mrkdwn <-> Matrix `org.matrix.custom.html`.

Slack -> Matrix parses mrkdwn itself: Slack's text is not HTML and not Markdown, and its rules
(markers only at word boundaries, `<...>` tokens for links and mentions, `&gt;` for quotes)
need a small parser of their own. The HTML it writes uses only the tags the XMPP allow-list
also accepts (strong, em, del, code, pre, blockquote, a, br), each escaped as it is written.

Matrix -> Slack builds on mautrix's MatrixParser, which already walks Matrix HTML (lists, reply
fallbacks, pills, whitespace); the Slack part is how each entity is written and the escaping
of `&`, `<` and `>`, the only characters Slack asks clients to escape.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote

from mautrix.types import RoomAlias, RoomID, UserID
from mautrix.util.formatter import (
    EntityType,
    HTMLNode,
    MarkdownString,
    MatrixParser,
    RecursionContext,
)

from .emoji import shortcode_to_unicode

# Slack user id -> (Matrix user id, display name) of the user's ghost, or None if unknown.
UserResolver = Callable[[str], tuple[str, str] | None]
# Slack channel id -> the portal's room alias or id, or None if it has no portal.
ChannelResolver = Callable[[str], str | None]
# Matrix user id -> Slack user id. Synchronous: callers look the pills up beforehand.
MxidResolver = Callable[[str], str | None]
# Matrix room alias or id -> Slack channel id.
RoomResolver = Callable[[str], str | None]

MATRIX_TO = "https://matrix.to/#/"
# Links to anything else (javascript:, data:, slack://) keep their text and lose the link.
SAFE_SCHEMES = ("http://", "https://", "mailto:", "ftp://")
ROOM_MENTIONS = {"here", "channel", "everyone"}
# How deep *_~nested~_* markers may go; deeper ones stay literal rather than recursing on.
MAX_NESTING = 16


@dataclass(slots=True)
class MatrixText:
    """A Slack message as Matrix content: `body`, `formatted_body` (None when plain text
    says it all) and what `m.mentions` should list."""

    body: str
    html: str | None
    mentioned_user_ids: list[str] = field(default_factory=list)
    mentions_room: bool = False

    def mentions(self) -> dict[str, object]:
        """The `m.mentions` object for this message."""
        result: dict[str, object] = {"user_ids": list(self.mentioned_user_ids)}
        if self.mentions_room:
            result["room"] = True
        return result


# --- Slack -> Matrix ----------------------------------------------------------------------

_ENTITY = re.compile(r"&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:")
_ANGLE = re.compile(r"<([^<>\n]+)>")
# One pass, leftmost match first, so a backtick inside a link or a `<` inside code stays
# where it belongs. Bare URLs are atoms only so that their `_` and `*` are not markers; the
# last character excludes sentence punctuation and markers (`*see https://x*`).
_TOKEN = re.compile(
    r"(?P<pre>```(?P<pre_body>.+?)```)"
    r"|`(?P<code>[^`\n]+)`"
    r"|<(?P<angle>[^<>\n]+)>"
    r"|(?P<url>\b(?:https?|ftp)://[^\s<>]*[^\s<>.,;:!?)\]'\"*_~])"
    r"|:(?P<emoji>[a-z0-9_+-]+):(?::(?P<tone>skin-tone-[2-6]):)?",
    re.DOTALL,
)
_MARKS = {"*": "strong", "_": "em", "~": "del"}


def _decode(text: str) -> str:
    """Undo Slack's escaping, which covers exactly &, < and > (so `&nbsp;` stays as typed)."""
    return _ENTITY.sub(lambda m: _ENTITIES[m.group(1)], text)


@dataclass(slots=True)
class _Atom:
    """A piece of a line that formatting markers cannot reach into."""

    plain: str
    html: str
    formatted: bool = False  # only HTML shows it as meant (a link, a pill, code)
    block: bool = False  # a block element: no <br> needed beside it


_Unit = str | _Atom  # one character of text, or an atom


def _literal(text: str) -> _Atom:
    return _Atom(text, escape(text, quote=False))


def _link(href: str, text: str) -> str:
    return f'<a href="{escape(href, quote=True)}">{escape(text, quote=False)}</a>'


def _timestamp(parts: list[str]) -> str:
    # `<!date^1392734382^{date_short}>` without a fallback: show the moment, in UTC.
    try:
        moment = datetime.fromtimestamp(int(parts[1]), UTC)
    except (IndexError, ValueError, OverflowError, OSError):
        return "<date>"
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class _SlackReader:
    def __init__(self, resolve_user: UserResolver | None,
                 resolve_channel: ChannelResolver | None) -> None:
        self.resolve_user = resolve_user
        self.resolve_channel = resolve_channel
        self.mentioned: list[str] = []
        self.room = False

    def angle(self, content: str, in_code: bool = False) -> _Atom:
        """One `<...>` token: a link, a mention or a special command."""
        target, _, label = content.partition("|")
        target, label = _decode(target), _decode(label)
        kind = target[:1]
        if kind == "@":
            user_id = target[1:]
            found = self.resolve_user(user_id) if self.resolve_user else None
            if found is None:
                return _literal("@" + (label.lstrip("@") or user_id))
            mxid, name = found
            if in_code:
                return _literal("@" + name)
            if mxid not in self.mentioned:
                self.mentioned.append(mxid)
            return _Atom(name, _link(MATRIX_TO + quote(mxid, safe="@:"), name), formatted=True)
        if kind == "#":
            portal = self.resolve_channel(target[1:]) if self.resolve_channel else None
            # Slack often sends `<#C123|>`; the portal's alias is the next best name.
            text = "#" + label if label else (portal if portal and portal[:1] == "#"
                                              else "#" + target[1:])
            if portal is None or in_code:
                return _literal(text)
            return _Atom(text, _link(MATRIX_TO + quote(portal, safe="@:#!"), text),
                         formatted=True)
        if kind == "!":
            parts = target[1:].split("^")
            command = parts[0]
            if command in ROOM_MENTIONS:
                self.room = self.room or not in_code
                return _literal("@" + command)
            if command == "date":
                return _literal(label or _timestamp(parts))
            if command == "subteam":
                return _literal(label or "@" + (parts[1] if len(parts) > 1 else "team"))
            return _literal(label or "@" + command)
        if _SCHEME.match(target):
            shown = label or target.removeprefix("mailto:")
            if in_code or not target.lower().startswith(SAFE_SCHEMES):
                return _literal(shown if in_code or label else target)
            # The plain body keeps the address too when the label hides it.
            bare = target.split("://", 1)[-1].removeprefix("mailto:")
            plain = shown if shown in (target, bare) else f"{shown} ({target})"
            return _Atom(plain, _link(target, shown), formatted=True)
        # Not a Slack token: a bot sent an unescaped `<`. Keep it as written.
        return _literal(_decode("<" + content + ">"))

    def code_text(self, raw: str) -> str:
        """Code keeps its text, but Slack still wraps links and mentions in `<...>` there."""
        out, last = [], 0
        for match in _ANGLE.finditer(raw):
            out.append(_decode(raw[last:match.start()]))
            out.append(self.angle(match.group(1), in_code=True).plain)
            last = match.end()
        out.append(_decode(raw[last:]))
        return "".join(out)

    def units(self, text: str) -> list[_Unit]:
        units: list[_Unit] = []
        last = 0
        for match in _TOKEN.finditer(text):
            units.extend(_decode(text[last:match.start()]))
            last = match.end()
            if match.group("pre") is not None:
                raw = self.code_text(match.group("pre_body"))
                # Slack drops the line break that usually follows the opening fence.
                code = raw.removeprefix("\n").removesuffix("\n")
                units.append(_Atom(f"```{raw}```",
                                   f"<pre><code>{escape(code, quote=False)}</code></pre>",
                                   formatted=True, block=True))
            elif match.group("code") is not None:
                code = self.code_text(match.group("code"))
                units.append(_Atom(f"`{code}`", f"<code>{escape(code, quote=False)}</code>",
                                   formatted=True))
            elif match.group("angle") is not None:
                units.append(self.angle(match.group("angle")))
            elif match.group("url") is not None:
                units.append(_literal(_decode(match.group("url"))))
            else:
                name = match.group("emoji")
                tone = match.group("tone")
                char = shortcode_to_unicode(f"{name}::{tone}" if tone else name)
                # Unknown and custom emoji stay as typed, but as one atom: `:party_parrot:`
                # must not start an italic.
                units.append(_literal(char or match.group(0)))
        units.extend(_decode(text[last:]))
        return units


def _is_space(unit: _Unit | None) -> bool:
    return isinstance(unit, str) and unit.isspace()


def _is_word(unit: _Unit | None) -> bool:
    return isinstance(unit, str) and unit.isalnum()


class _Line:
    """Inline formatting of one line: `*bold*`, `_italic_`, `~strike~`, nested.

    A marker opens only after a non-word character and before a non-space, and closes only
    after a non-space and before a non-word character; that is what keeps snake_case and
    2*3*4 as they are. Closers depend only on their neighbours, so they are found once and
    each opener takes the first one after it (no backtracking, no quadratic rescans).
    """

    def __init__(self, units: list[_Unit]) -> None:
        self.units = units
        self.closers: dict[str, list[int]] = {mark: [] for mark in _MARKS}
        for j, unit in enumerate(units):
            if isinstance(unit, str) and unit in _MARKS and j > 0:
                before, after = units[j - 1], self._at(j + 1)
                if not _is_space(before) and before != unit and not _is_word(after):
                    self.closers[unit].append(j)

    def _at(self, index: int) -> _Unit | None:
        return self.units[index] if 0 <= index < len(self.units) else None

    def _opens(self, i: int) -> bool:
        after = self._at(i + 1)
        # `**x**` opens at the second marker, so Markdown habits show as `*` + bold.
        return (not _is_word(self._at(i - 1)) and after is not None and not _is_space(after)
                and after != self.units[i])

    def render(self, start: int = 0, end: int | None = None,
               depth: int = 0) -> tuple[str, str, bool]:
        """(plain, html, whether HTML is needed) for units[start:end]."""
        end = len(self.units) if end is None else end
        plain: list[str] = []
        html: list[str] = []
        formatted = False
        i = start
        while i < end:
            unit = self.units[i]
            if isinstance(unit, _Atom):
                plain.append(unit.plain)
                html.append(unit.html)
                formatted = formatted or unit.formatted
                i += 1
                continue
            if unit in _MARKS and depth < MAX_NESTING and self._opens(i):
                closers = self.closers[unit]
                k = bisect_right(closers, i + 1)
                if k < len(closers) and closers[k] < end:
                    j = closers[k]
                    inner_plain, inner_html, _ = self.render(i + 1, j, depth + 1)
                    tag = _MARKS[unit]
                    plain.append(f"{unit}{inner_plain}{unit}")
                    html.append(f"<{tag}>{inner_html}</{tag}>")
                    formatted = True
                    i = j + 1
                    continue
            plain.append(unit)
            html.append(escape(unit, quote=False))
            i += 1
        return "".join(plain), "".join(html), formatted


def _starts(line: list[_Unit], prefix: str) -> bool:
    return len(line) >= len(prefix) and all(u == c for u, c in zip(line, prefix, strict=False))


def _after_marker(line: list[_Unit], marker: str) -> list[_Unit]:
    rest = line[len(marker):]
    return rest[1:] if rest and rest[0] == " " else rest


@dataclass(slots=True)
class _Block:
    plain: str
    html: str
    formatted: bool
    starts_block: bool
    ends_block: bool


def _join(blocks: list[_Block]) -> tuple[str, str, bool]:
    html: list[str] = []
    for index, block in enumerate(blocks):
        # <br> only between inline lines: a <pre> or <blockquote> already breaks the line.
        if index and not (blocks[index - 1].ends_block or block.starts_block):
            html.append("<br>")
        html.append(block.html)
    return ("\n".join(b.plain for b in blocks), "".join(html),
            any(b.formatted for b in blocks))


def _line_block(line: list[_Unit]) -> _Block:
    plain, html, formatted = _Line(line).render()
    first, last = (line[0], line[-1]) if line else (None, None)
    return _Block(plain, html, formatted,
                  isinstance(first, _Atom) and first.block,
                  isinstance(last, _Atom) and last.block)


def _quote_block(lines: list[list[_Unit]]) -> _Block:
    inner = [_line_block(line) for line in lines]
    _, html, _ = _join(inner)
    plain = "\n".join(f"> {b.plain}" if b.plain else ">" for b in inner)
    return _Block(plain, f"<blockquote>{html}</blockquote>", True, True, True)


def mrkdwn_to_matrix(text: str, resolve_user: UserResolver | None = None,
                     resolve_channel: ChannelResolver | None = None) -> MatrixText:
    """Slack message text (mrkdwn, as the Events API delivers it) -> Matrix content."""
    reader = _SlackReader(resolve_user, resolve_channel)
    units = reader.units(text.replace("\r\n", "\n"))
    lines: list[list[_Unit]] = [[]]
    for unit in units:
        if unit == "\n":
            lines.append([])
        else:
            lines[-1].append(unit)

    blocks: list[_Block] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _starts(line, ">>>"):
            # `>>>` quotes the rest of the message, whatever follows.
            first = _after_marker(line, ">>>")
            rest = lines[i + 1:]
            blocks.append(_quote_block(([first] if first or not rest else []) + rest))
            break
        if _starts(line, ">"):
            group = []
            while i < len(lines) and _starts(lines[i], ">") and not _starts(lines[i], ">>>"):
                group.append(_after_marker(lines[i], ">"))
                i += 1
            blocks.append(_quote_block(group))
            continue
        blocks.append(_line_block(line))
        i += 1

    plain, html, formatted = _join(blocks)
    return MatrixText(plain, html if formatted else None, reader.mentioned, reader.room)


# --- Matrix -> Slack ----------------------------------------------------------------------


def _escape(text: str) -> str:
    return escape(text, quote=False)


def _slack_link(url: str, label: str) -> str:
    # `|` ends the address in Slack's syntax; in a URL it is safe to percent-encode.
    target = _escape(url).replace("|", "%7C")
    label = label.strip()
    if not label or label in (target, _escape(url)):
        return f"<{target}>"
    return f"<{target}|{label}>"


class _Mrkdwn(MarkdownString):
    """MatrixParser's output, written as Slack mrkdwn; text arrives already escaped."""

    def _wrap(self, marker: str) -> _Mrkdwn:
        # Slack markers must hug the words and cannot span lines: `*a*\n*b*`, not `*a\nb *`.
        lines = []
        for line in self.text.split("\n"):
            core = line.strip()
            if not core or (len(core) > 1 and core[0] == core[-1] == marker):
                lines.append(line)
                continue
            lead = line[: len(line) - len(line.lstrip())]
            trail = line[len(line.rstrip()):]
            lines.append(f"{lead}{marker}{core}{marker}{trail}")
        self.text = "\n".join(lines)
        return self

    def format(self, entity_type: EntityType, **kwargs: object) -> _Mrkdwn:
        if entity_type in (EntityType.BOLD, EntityType.HEADER):
            return self._wrap("*")
        if entity_type == EntityType.ITALIC:
            return self._wrap("_")
        if entity_type == EntityType.STRIKETHROUGH:
            return self._wrap("~")
        if entity_type == EntityType.URL:
            self.text = _slack_link(str(kwargs["url"]), self.text)
        elif entity_type == EntityType.INLINE_CODE:
            if self.text:
                self.text = f"`{self.text}`"
        elif entity_type == EntityType.PREFORMATTED:
            # A fence inside the code would end the block early; a zero-width space breaks it.
            code = self.text.strip("\n").replace("```", "``\u200b`")
            self.text = f"```\n{code}\n```" if code.strip() else ""
        elif entity_type == EntityType.BLOCKQUOTE:
            lines = self.text.strip().split("\n")
            self.text = "\n".join(f"> {line}" if line else ">" for line in lines)
        # Underline, colour and spoilers have no mrkdwn form: the text stays, plainly.
        return self

    def split(self, separator: str, max_items: int = -1) -> list[_Mrkdwn]:
        return [_Mrkdwn(part) for part in self.text.split(separator, max_items)]


def _run_sync(coroutine: Coroutine[object, object, _Mrkdwn]) -> _Mrkdwn:
    """Run MatrixParser to completion without an event loop.

    Its methods are async only so that subclasses may await; ours never do (the resolvers
    are plain functions), so the coroutine finishes on its first step.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the Slack mrkdwn writer awaited something; it must stay synchronous")


class _SlackWriter(MatrixParser[_Mrkdwn]):
    fs = _Mrkdwn
    list_bullets = ("•",)

    def __init__(self, resolve_mxid: MxidResolver | None,
                 resolve_room: RoomResolver | None) -> None:
        self.resolve_mxid = resolve_mxid
        self.resolve_room = resolve_room

    async def text_to_fstring(self, text: str, ctx: RecursionContext,
                              strip_leading_whitespace: bool = False) -> _Mrkdwn:
        msg = await super().text_to_fstring(text, ctx, strip_leading_whitespace)
        msg.text = _escape(msg.text)
        return msg

    async def custom_node_to_fstring(self, node: HTMLNode,
                                     ctx: RecursionContext) -> _Mrkdwn | None:
        # Never valid in Matrix HTML; their content is code, not message text.
        if node.tag in ("script", "style"):
            return self.fs("")
        # MatrixParser knows <s> and <del> but not the older <strike>.
        if node.tag == "strike":
            return await self.basic_format_to_fstring(node, ctx)
        return None

    async def parse_node(self, node: HTMLNode, ctx: RecursionContext) -> _Mrkdwn:
        # Only code uses this, and code keeps its own whitespace: MatrixParser's default
        # joins the pieces with a space, which doubled the spaces around tags inside code.
        return self.fs.join(await self.node_to_fstrings(node, ctx), "")

    async def basic_format_to_fstring(self, node: HTMLNode, ctx: RecursionContext) -> _Mrkdwn:
        # Inside code Slack shows markers literally, so formatting there is dropped.
        if ctx.preserve_whitespace:
            return await self.parse_node(node, ctx)
        msg = await super().basic_format_to_fstring(node, ctx)
        # MatrixParser trims a tag's content, which would glue `<b>bold </b>text` into
        # `*bold*text` (not bold in Slack); the space belongs outside the markers.
        if node.text[:1].isspace():
            msg = msg.prepend(" ")
        last = node[-1].tail if len(node) else node.text
        if last[-1:].isspace() and not node.tail[:1].isspace():
            msg = msg.append(" ")
        return msg

    async def link_to_fstring(self, node: HTMLNode, ctx: RecursionContext) -> _Mrkdwn:
        if ctx.preserve_whitespace:
            return await self.parse_node(node, ctx)
        href = node.attrib.get("href", "")
        if href.lower().startswith("mailto:"):
            label = await self.tag_aware_parse_node(node, ctx)
            return self.fs(_slack_link(href, label.text))
        return await super().link_to_fstring(node, ctx)

    async def url_to_fstring(self, msg: _Mrkdwn, url: str) -> _Mrkdwn | None:
        if not url.lower().startswith(SAFE_SCHEMES):
            return msg
        return msg.format(EntityType.URL, url=url)

    async def user_pill_to_fstring(self, msg: _Mrkdwn, user_id: UserID) -> _Mrkdwn | None:
        slack_id = self.resolve_mxid(user_id) if self.resolve_mxid else None
        if slack_id:
            return self.fs(f"<@{slack_id}>")
        return msg if msg.text.strip() else self.fs(_escape(user_id))

    async def _room(self, msg: _Mrkdwn, room: str) -> _Mrkdwn | None:
        channel = self.resolve_room(room) if self.resolve_room else None
        # Without a channel the pill stays a matrix.to link (returning None does that).
        return self.fs(f"<#{channel}>") if channel else None

    async def room_pill_to_fstring(self, msg: _Mrkdwn, room_alias: RoomAlias) -> _Mrkdwn | None:
        return await self._room(msg, room_alias)

    async def room_id_link_to_fstring(self, msg: _Mrkdwn, room_id: RoomID) -> _Mrkdwn | None:
        return await self._room(msg, room_id)

    async def img_to_fstring(self, node: HTMLNode, ctx: RecursionContext) -> _Mrkdwn:
        # Custom emoji (`data-mx-emoticon`) have their `:name:` as alt text; Slack may know it.
        return self.fs(_escape(node.attrib.get("alt") or node.attrib.get("title") or ""))


def _strip_reply_fallback(body: str) -> str:
    # Older clients start a reply's body with `> <@user:server> quoted` lines and a blank line.
    if not body.startswith("> <"):
        return body
    lines = body.split("\n")
    for index, line in enumerate(lines):
        if line == "":
            return "\n".join(lines[index + 1:])
        if not line.startswith(">"):
            break
    return body


def matrix_to_mrkdwn(body: str, html: str | None = None,
                     resolve_mxid: MxidResolver | None = None,
                     resolve_room: RoomResolver | None = None) -> str:
    """Matrix `body`/`formatted_body` -> Slack mrkdwn for chat.postMessage's `text`."""
    if not html:
        return _escape(_strip_reply_fallback(body))
    parsed = _run_sync(_SlackWriter(resolve_mxid, resolve_room).parse(html))
    # Paragraphs and blocks each add line breaks; more than one blank line is noise.
    return re.sub(r"\n{3,}", "\n\n", parsed.text).strip()
