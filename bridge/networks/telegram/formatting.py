"""Telegram message entities <-> Matrix HTML.

Telegram sends plain text plus entities (offsets and lengths in UTF-16 code units); Matrix
formatted bodies are HTML. Mentions become pills both ways (Telegram's mention-by-id
<-> a matrix.to link to the ghost or linked user); custom emoji keep their fallback text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

from ..lazy import lazy

if TYPE_CHECKING:
    from telethon.tl import types
else:
    types = lazy("telethon.tl.types")  # imported on first use, not with the connector

PILL = re.compile(r"^https://matrix\.to/#/(@[^/?#]+)")
SAFE_SCHEMES = ("http://", "https://", "mailto:", "tg://")

# Entity type (Telethon's class name: naming the classes themselves would import Telethon
# with this module) -> (opening tag, closing tag) in Matrix HTML.
_SIMPLE: dict[str, tuple[str, str]] = {
    "MessageEntityBold": ("<strong>", "</strong>"),
    "MessageEntityItalic": ("<em>", "</em>"),
    "MessageEntityUnderline": ("<u>", "</u>"),
    "MessageEntityStrike": ("<del>", "</del>"),
    "MessageEntitySpoiler": ("<span data-mx-spoiler>", "</span>"),
    "MessageEntityCode": ("<code>", "</code>"),
    "MessageEntityBlockquote": ("<blockquote>", "</blockquote>"),
}


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-le")


def _units(text: str) -> int:
    """The length Telegram counts: UTF-16 code units."""
    return len(_utf16(text)) // 2


def _from_utf16(units: bytes) -> str:
    return units.decode("utf-16-le", errors="ignore")


# ---- Telegram -> Matrix ---------------------------------------------------------------------

def to_matrix(text: str, entities: list[Any] | None,
              ghost_of: Callable[[int], str]) -> tuple[str | None, tuple[str, ...]]:
    """(the HTML body, or None when nothing is formatted; the Matrix IDs mentioned)."""
    if not entities:
        return None, ()
    units = _utf16(text)
    opens: dict[int, list[tuple[int, str]]] = {}
    closes: dict[int, list[tuple[int, str]]] = {}
    mentioned: list[str] = []
    for index, entity in enumerate(entities):
        tags = _tags(entity, ghost_of, mentioned)
        if tags is None:
            continue
        start, end = entity.offset * 2, (entity.offset + entity.length) * 2
        # Outer entities (earlier, longer) open first and close last.
        opens.setdefault(start, []).append((-(end - start), tags[0]))
        closes.setdefault(end, []).append((index, tags[1]))
    if not opens:
        return None, ()
    out: list[str] = []
    points = sorted({0, len(units), *opens, *closes})
    in_pre = 0
    for here, there in zip(points, [*points[1:], None], strict=False):
        for _, tag in sorted(closes.get(here, []), key=lambda c: -c[0]):
            out.append(tag)
            in_pre -= tag.endswith("</pre>")
        for _, tag in sorted(opens.get(here, [])):
            out.append(tag)
            in_pre += tag.startswith("<pre>")
        if there is not None:
            segment = html.escape(_from_utf16(units[here:there]), quote=False)
            # Line breaks are <br> in HTML, except in a code block, which keeps them.
            out.append(segment if in_pre else segment.replace("\n", "<br>"))
    return "".join(out), tuple(dict.fromkeys(mentioned))


def _tags(entity: Any, ghost_of: Callable[[int], str],
          mentioned: list[str]) -> tuple[str, str] | None:
    simple = _SIMPLE.get(type(entity).__name__)
    if simple is not None and type(entity) is getattr(types, type(entity).__name__):
        return simple
    if isinstance(entity, types.MessageEntityPre):
        language = re.sub(r"[^\w+#.-]", "", entity.language or "")
        attribute = f' class="language-{language}"' if language else ""
        return f"<pre><code{attribute}>", "</code></pre>"
    if isinstance(entity, types.MessageEntityTextUrl):
        # Only links a person can follow safely; anything else (javascript:) stays text.
        if not entity.url.lower().startswith(SAFE_SCHEMES):
            return None
        return f'<a href="{html.escape(entity.url)}">', "</a>"
    if isinstance(entity, types.MessageEntityMentionName):
        mxid = ghost_of(entity.user_id)
        mentioned.append(mxid)
        return f'<a href="https://matrix.to/#/{html.escape(mxid)}">', "</a>"
    # Custom emoji, hashtags, plain URLs and the rest: the text itself says it.
    return None


# ---- Matrix -> Telegram ---------------------------------------------------------------------

class _Parser(HTMLParser):
    def __init__(self, user_of: Callable[[str], int | None]) -> None:
        super().__init__(convert_charrefs=True)
        self.user_of = user_of
        self.text: list[str] = []
        self.length = 0  # UTF-16 units so far
        self.entities: list[Any] = []
        self.stack: list[tuple[str, int, Any]] = []
        self.skip = 0  # inside <mx-reply>: the quoted fallback is not sent

    def _append(self, text: str) -> None:
        if self.skip:
            return
        self.text.append(text)
        self.length += _units(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "mx-reply":
            self.skip += 1
            return
        if tag == "br":
            self._append("\n")
            return
        if tag in ("p", "div", "li") and self.length and not "".join(self.text).endswith(
                "\n"):
            self._append("\n")
        if tag == "li":
            self._append("- ")
        make: Any = None
        if tag in ("b", "strong"):
            make = types.MessageEntityBold
        elif tag in ("i", "em"):
            make = types.MessageEntityItalic
        elif tag == "u":
            make = types.MessageEntityUnderline
        elif tag in ("s", "del", "strike"):
            make = types.MessageEntityStrike
        elif tag == "span" and "data-mx-spoiler" in attributes:
            make = types.MessageEntitySpoiler
        elif tag == "blockquote":
            make = types.MessageEntityBlockquote
        elif tag == "code":
            if self.stack and self.stack[-1][0] == "pre":
                language = (attributes.get("class") or "").removeprefix("language-")
                self.stack[-1] = ("pre", self.stack[-1][1], language)
                return
            make = types.MessageEntityCode
        elif tag == "pre":
            self.stack.append(("pre", self.length, ""))
            return
        elif tag == "a":
            href = attributes.get("href") or ""
            pill = PILL.match(href)
            user = self.user_of(pill.group(1)) if pill else None
            if user is not None:
                self.stack.append(("a", self.length, ("mention", user)))
            elif href.lower().startswith(SAFE_SCHEMES) and not pill:
                self.stack.append(("a", self.length, ("url", href)))
            else:
                self.stack.append(("a", self.length, None))
            return
        if make is not None:
            self.stack.append((tag, self.length, make))

    def handle_endtag(self, tag: str) -> None:
        if tag == "mx-reply":
            self.skip = max(0, self.skip - 1)
            return
        for index in range(len(self.stack) - 1, -1, -1):
            name, start, what = self.stack[index]
            if name != tag and not (tag == "code" and name == "code"):
                continue
            del self.stack[index]
            length = self.length - start
            if length <= 0 or what is None:
                return
            if name == "pre":
                self.entities.append(types.MessageEntityPre(start, length, what or ""))
            elif name == "a":
                kind, value = what
                self.entities.append(
                    types.InputMessageEntityMentionName(start, length, value)
                    if kind == "mention" else types.MessageEntityTextUrl(start, length, value))
            else:
                self.entities.append(what(start, length))
            return

    def handle_data(self, data: str) -> None:
        self._append(data)


def from_matrix(body: str, formatted: str | None,
                user_of: Callable[[str], int | None]) -> tuple[str, list[Any]]:
    """The text and entities to send for a Matrix message; `user_of` names the Telegram
    user a pill stands for (a ghost or a linked person), else None."""
    if not formatted:
        return body, []
    parser = _Parser(user_of)
    parser.feed(formatted)
    parser.close()
    text = "".join(parser.text)
    stripped = text.rstrip("\n")
    cut = _units(text) - _units(stripped)
    end = _units(stripped)
    entities = []
    for entity in parser.entities:
        if cut and entity.offset + entity.length > end:
            entity.length = end - entity.offset
        if entity.length > 0:
            entities.append(entity)
    entities.sort(key=lambda e: (e.offset, -e.length))
    return stripped, entities


def to_input_entities(entities: list[Any], input_user: Callable[[int], Any]) -> list[Any]:
    """Mentions need the person's input user (with its access hash) on the wire."""
    out = []
    for entity in entities:
        if isinstance(entity, types.InputMessageEntityMentionName) and isinstance(
                entity.user_id, int):
            entity = types.InputMessageEntityMentionName(entity.offset, entity.length,
                                                         input_user(entity.user_id))
        out.append(entity)
    return out
