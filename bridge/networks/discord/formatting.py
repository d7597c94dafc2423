"""Discord markdown <-> Matrix HTML.

Discord -> Matrix: bold, italic, underline, strike, spoiler, inline code, code blocks with a
language, quotes (`>` and `>>>`), headings, subtext (`-#`), masked links, user / role /
channel mentions, custom emoji and `@everyone`/`@here`. Matrix -> Discord: the same back,
with pills becoming `<@id>` for people the bridge knows on Discord.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import attrs

# A resolver: Discord id -> (what to link to, the name to show), or None when unknown.
UserResolver = Callable[[str], tuple[str, str] | None]
NameResolver = Callable[[str], str | None]

_TOKEN = re.compile(
    r"(?P<codeblock>```(?:(?P<lang>[A-Za-z0-9_+\-.#]+)\n)?(?P<code>.*?)```)"
    r"|(?P<inline>`(?P<icode>[^`]+)`)"
    r"|(?P<user><@!?(?P<uid>\d+)>)"
    r"|(?P<role><@&(?P<rid>\d+)>)"
    r"|(?P<chan><#(?P<cid>\d+)>)"
    r"|(?P<emoji><a?:(?P<ename>\w+):\d+>)"
    r"|(?P<link>\[(?P<ltext>[^\]]+)\]\(<?(?P<lurl>https?://[^\s)>]+)>?\))"
    r"|(?P<url><?(?P<bare>https?://[^\s<>]+[^\s<>.,;:!?)\]'\"])>?)"
    r"|(?P<everyone>@(?:everyone|here)\b)"
    r"|(?P<esc>\\(?P<escaped>[*_~|`\\>#-]))"
    r"|(?P<mark>\*\*|__|~~|\|\||\*|_)",
    re.DOTALL)

_TAGS = {"**": "strong", "__": "u", "~~": "del", "*": "em", "_": "em"}


@attrs.frozen
class Formatted:
    body: str
    html: str | None
    mentioned_user_ids: tuple[str, ...] = ()
    mentions_room: bool = False


class _Inline:
    """Turns one line's inline markdown into (plain text, HTML), pairing markers like
    Discord does (an unpaired marker stays as typed)."""

    def __init__(self, users: UserResolver, roles: NameResolver, channels: NameResolver
                 ) -> None:
        self.users, self.roles, self.channels = users, roles, channels
        self.mentioned: list[str] = []
        self.room = False

    def convert(self, text: str) -> tuple[str, str]:
        plain: list[str] = []
        out: list[str] = []
        open_marks: list[tuple[str, int, int]] = []
        position = 0
        for match in _TOKEN.finditer(text):
            literal = text[position:match.start()]
            plain.append(literal)
            out.append(html.escape(literal, quote=False))
            position = match.end()
            kind = match.lastgroup
            if match.group("codeblock"):
                code = match.group("code")
                lang = match.group("lang")
                cls = f' class="language-{html.escape(lang)}"' if lang else ""
                plain.append(match.group(0))
                out.append(f"<pre><code{cls}>{html.escape(code.rstrip(chr(10)))}</code></pre>")
            elif match.group("inline"):
                plain.append(match.group(0))
                out.append(f"<code>{html.escape(match.group('icode'))}</code>")
            elif match.group("user"):
                uid = match.group("uid")
                found = self.users(uid)
                if found is None:
                    plain.append(f"@{uid}")
                    out.append(f"@{uid}")
                else:
                    mxid, name = found
                    self.mentioned.append(mxid)
                    plain.append(name)
                    out.append(f'<a href="https://matrix.to/#/{html.escape(mxid)}">'
                               f"{html.escape(name)}</a>")
            elif match.group("role"):
                name = f"@{self.roles(match.group('rid')) or 'role'}"
                plain.append(name)
                out.append(html.escape(name))
            elif match.group("chan"):
                name = f"#{self.channels(match.group('cid')) or 'channel'}"
                plain.append(name)
                out.append(html.escape(name))
            elif match.group("emoji"):
                name = f":{match.group('ename')}:"
                plain.append(name)
                out.append(name)
            elif match.group("link"):
                label, url = match.group("ltext"), match.group("lurl")
                plain.append(f"{label} ({url})")
                out.append(f'<a href="{html.escape(url)}">{html.escape(label)}</a>')
            elif match.group("url"):
                url = match.group("bare")
                plain.append(url)
                out.append(f'<a href="{html.escape(url)}">{html.escape(url)}</a>')
            elif match.group("everyone"):
                self.room = True
                plain.append(match.group(0))
                out.append(match.group(0))
            elif match.group("esc"):
                plain.append(match.group("escaped"))
                out.append(html.escape(match.group("escaped")))
            elif kind == "mark":
                mark = match.group("mark")
                index = next((i for i in range(len(open_marks) - 1, -1, -1)
                              if open_marks[i][0] == mark), None)
                if index is None:
                    open_marks.append((mark, len(out), len(plain)))
                    out.append(mark)
                    plain.append(mark)
                    continue
                _, start, plain_start = open_marks[index]
                del open_marks[index:]
                out[start] = _open_tag(mark)
                plain[plain_start] = ""
                out.append(_close_tag(mark))
        rest = text[position:]
        plain.append(rest)
        out.append(html.escape(rest, quote=False))
        # Markers never closed are plain characters again.
        for mark, index, _ in open_marks:
            out[index] = html.escape(mark)
        return "".join(plain), "".join(out)


def _open_tag(mark: str) -> str:
    if mark == "||":
        return "<span data-mx-spoiler>"
    return f"<{_TAGS[mark]}>"


def _close_tag(mark: str) -> str:
    return "</span>" if mark == "||" else f"</{_TAGS[mark]}>"


def discord_to_matrix(text: str, users: UserResolver, roles: NameResolver,
                      channels: NameResolver) -> Formatted:
    inline = _Inline(users, roles, channels)
    plain_lines: list[str] = []
    html_parts: list[str] = []
    quote: list[str] = []
    rest_quoted = False
    blocks = _split_code_blocks(text)
    for is_code, chunk in blocks:
        if is_code:
            body, markup = inline.convert(chunk)
            plain_lines.append(body)
            html_parts.append(markup)
            continue
        lines = chunk.split("\n")
        for index, line in enumerate(lines):
            quoted = rest_quoted
            if line.startswith(">>> "):
                rest_quoted, quoted, line = True, True, line[4:]
            elif line.startswith("> ") or line == ">":
                quoted, line = True, line[2:]
            body, markup = _block_line(inline, line)
            if quoted:
                quote.append(markup)
                plain_lines.append(f"> {body}")
            else:
                if quote:
                    html_parts.append(f"<blockquote>{'<br>'.join(quote)}</blockquote>")
                    quote = []
                plain_lines.append(body)
                html_parts.append(markup)
                if index < len(lines) - 1 and not markup.endswith(("</h1>", "</h2>", "</h3>")):
                    html_parts.append("<br>")
    if quote:
        html_parts.append(f"<blockquote>{'<br>'.join(quote)}</blockquote>")
    body = "\n".join(plain_lines).strip("\n") if len(blocks) > 1 else "\n".join(plain_lines)
    markup = "".join(html_parts)
    plain_html = html.escape(body, quote=False).replace("\n", "<br>")
    return Formatted(body, None if markup == plain_html else markup,
                     tuple(dict.fromkeys(inline.mentioned)), inline.room)


def _split_code_blocks(text: str) -> list[tuple[bool, str]]:
    parts: list[tuple[bool, str]] = []
    position = 0
    for match in re.finditer(r"```.*?```", text, re.DOTALL):
        if match.start() > position:
            parts.append((False, text[position:match.start()]))
        parts.append((True, match.group(0)))
        position = match.end()
    if position < len(text) or not parts:
        parts.append((False, text[position:]))
    return parts


def _block_line(inline: _Inline, line: str) -> tuple[str, str]:
    heading = re.match(r"^(#{1,3}) (.*)$", line)
    if heading:
        body, markup = inline.convert(heading.group(2))
        level = len(heading.group(1))
        return body, f"<h{level}>{markup}</h{level}>"
    if line.startswith("-# "):
        body, markup = inline.convert(line[3:])
        return body, f"<sub>{markup}</sub>"
    return inline.convert(line)


# ---- Matrix -> Discord ----------------------------------------------------------------------

_MARKS = {"strong": "**", "b": "**", "em": "*", "i": "*", "u": "__", "del": "~~",
          "s": "~~", "strike": "~~"}
_ESCAPE = re.compile(r"([*_~|`\\>])")


class _ToMarkdown(HTMLParser):
    def __init__(self, user_id_for: Callable[[str], str | None]) -> None:
        super().__init__(convert_charrefs=True)
        self.user_id_for = user_id_for
        self.out: list[str] = []
        self.stack: list[tuple[str, str]] = []
        self.skip = 0
        self.code = 0
        self.link: list[tuple[str, int]] = []
        self.quote_start: list[int] = []

    def handle_starttag(self, tag: str, attrs_: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs_)
        if tag == "mx-reply":
            self.skip += 1
        if self.skip:
            return
        if tag in _MARKS:
            self.out.append(_MARKS[tag])
        elif tag == "span" and "data-mx-spoiler" in attributes:
            self.out.append("||")
            self.stack.append((tag, "||"))
            return
        elif tag == "code" and not self.code:
            self.out.append("`")
        elif tag == "pre":
            self.code += 1
            lang = ""
            self.out.append("```")
            self.stack.append(("pre-lang", lang))
        elif tag == "code" and self.code:
            classes = attributes.get("class") or ""
            match = re.search(r"language-(\S+)", classes)
            self.out.append(f"{match.group(1) if match else ''}\n")
        elif tag == "a":
            self.link.append((attributes.get("href") or "", len(self.out)))
        elif tag == "br":
            self.out.append("\n")
        elif tag in ("p", "div") and self.out and not "".join(self.out).endswith("\n"):
            self.out.append("\n")
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.out.append("#" * min(int(tag[1]), 3) + " ")
        elif tag == "sub":
            self.out.append("-# ")
        elif tag == "li":
            self.out.append("- ")
        elif tag == "blockquote":
            self.quote_start.append(len(self.out))
        if tag != "span":
            self.stack.append((tag, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "mx-reply":
            self.skip -= 1
            return
        if self.skip:
            return
        if tag == "span":
            if self.stack and self.stack[-1] == ("span", "||"):
                self.stack.pop()
                self.out.append("||")
            return
        if tag in _MARKS:
            self.out.append(_MARKS[tag])
        elif tag == "code" and not self.code:
            self.out.append("`")
        elif tag == "pre":
            self.code -= 1
            text = "".join(self.out)
            self.out = [text.rstrip("\n") + "\n```\n"]
        elif tag == "a" and self.link:
            href, start = self.link.pop()
            label = "".join(self.out[start:])
            del self.out[start:]
            self.out.append(self._link(href, label))
        elif tag in ("p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "sub", "li"):
            self.out.append("\n")
        elif tag == "blockquote" and self.quote_start:
            start = self.quote_start.pop()
            inner = "".join(self.out[start:]).strip("\n")
            del self.out[start:]
            self.out.append("\n".join(f"> {line}" for line in inner.split("\n")) + "\n")
        if self.stack:
            self.stack.pop()

    def _link(self, href: str, label: str) -> str:
        pill = re.match(r"https://matrix\.to/#/(@[^/?]+)", href)
        if pill:
            remote = self.user_id_for(pill.group(1))
            return f"<@{remote}>" if remote else label
        if href == label or not href:
            return label or href
        return f"[{label}]({href})"

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        self.out.append(data if self.code or (self.stack and self.stack[-1][0] == "code")
                        else _ESCAPE.sub(r"\\\1", data))

    def text(self) -> str:
        return re.sub(r"\n{3,}", "\n\n", "".join(self.out)).strip("\n")


def matrix_to_discord(body: str, formatted: str | None,
                      user_id_for: Callable[[str], str | None]) -> str:
    """Discord markdown for a Matrix message; `user_id_for` gives the Discord user id of a
    pill's Matrix ID (None: the pill's name stays as text)."""
    if not formatted:
        return body
    parser = _ToMarkdown(user_id_for)
    parser.feed(formatted)
    parser.close()
    return parser.text()


def pills(formatted: str | None) -> list[str]:
    """The Matrix IDs a formatted body links as pills."""
    if not formatted:
        return []
    return re.findall(r'href="https://matrix\.to/#/(@[^"?/]+)', formatted)


def emoji_key(emoji: Any) -> str:
    """A reaction's key in Matrix (of a discord.py PartialEmoji): the emoji itself, or a
    custom emoji's :name:."""
    return str(emoji.name) if emoji.is_unicode_emoji() else f":{emoji.name}:"
