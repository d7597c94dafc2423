"""Matrix HTML <-> XHTML-IM (XEP-0071), through one allow-list of harmless markup.

Both directions parse the markup and write it out again, well-formed, keeping only the tags
and attributes both sides understand; anything else keeps its text and loses its tag.
"""

from __future__ import annotations

from html import escape
from html.parser import HTMLParser

ALLOWED = {"b": (), "strong": (), "i": (), "em": (), "u": (), "s": (), "del": (),
           "code": (), "pre": (), "blockquote": (), "p": (), "br": (), "ul": (), "ol": (),
           "li": (), "a": ("href",), "span": ()}
# XHTML-IM predates <del> and <s> in some clients; both sides accept <del>.
RENAME = {"s": "del", "strike": "del"}
VOID = {"br"}
SAFE_SCHEMES = ("http://", "https://", "mailto:", "xmpp:", "matrix:")


class _Rewriter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []
        self.skip = 0  # inside <mx-reply>: Matrix's reply fallback, not part of the message

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "mx-reply":
            self.skip += 1
            return
        if self.skip:
            return
        tag = RENAME.get(tag, tag)
        if tag not in ALLOWED:
            return
        kept = ""
        for name, value in attrs:
            if name in ALLOWED[tag] and value and value.lower().startswith(SAFE_SCHEMES):
                kept += f' {name}="{escape(value, quote=True)}"'
        if tag in VOID:
            self.out.append(f"<{tag}{kept}/>")
        else:
            self.out.append(f"<{tag}{kept}>")
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "mx-reply":
            self.skip = max(0, self.skip - 1)
            return
        if self.skip:
            return
        tag = RENAME.get(tag, tag)
        if tag in self.open:
            while self.open:
                closing = self.open.pop()
                self.out.append(f"</{closing}>")
                if closing == tag:
                    break

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(escape(data, quote=False))

    def result(self) -> str:
        self.close()
        return "".join(self.out) + "".join(f"</{t}>" for t in reversed(self.open))


def clean(markup: str) -> str:
    rewriter = _Rewriter()
    rewriter.feed(markup)
    return rewriter.result()


def to_xhtml_im(matrix_html: str) -> str:
    """Matrix formatted_body -> the content of an XHTML-IM <body> (well-formed XML)."""
    return clean(matrix_html)


def from_xhtml_im(xhtml_content: str) -> str:
    """The content of an XHTML-IM <body> -> Matrix HTML."""
    return clean(xhtml_content)
