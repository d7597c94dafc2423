"""Telegram entities <-> Matrix HTML: offsets in UTF-16 code units, nesting, code blocks
with their language, mentions as pills, and links only of schemes a person can follow."""

from __future__ import annotations

from telethon.tl import types

from bridge.networks.telegram.formatting import from_matrix, to_matrix


def ghost(user_id: int) -> str:
    return f"@telegram_{user_id}:example.org"


def test_entities_after_an_emoji_and_nested():
    # 😀 is two UTF-16 code units: offsets after it count it twice.
    text = "😀 bold italic"
    html, mentions = to_matrix(text, [types.MessageEntityBold(3, 11),
                                      types.MessageEntityItalic(8, 6)], ghost)
    assert html == "😀 <strong>bold <em>italic</em></strong>"
    assert mentions == ()


def test_code_block_keeps_its_lines_and_language_and_spoilers():
    html, _ = to_matrix("a\nx = 1\ny", [types.MessageEntityPre(2, 5, "python"),
                                        types.MessageEntitySpoiler(8, 1)], ghost)
    assert html == ('a<br><pre><code class="language-python">x = 1</code></pre><br>'
                    "<span data-mx-spoiler>y</span>")


def test_mentions_become_pills_and_unsafe_links_stay_text():
    html, mentions = to_matrix("Bob see this", [
        types.MessageEntityMentionName(0, 3, user_id=7),
        types.MessageEntityTextUrl(8, 4, url="javascript:alert(1)")], ghost)
    assert html == '<a href="https://matrix.to/#/@telegram_7:example.org">Bob</a> see this'
    assert mentions == ("@telegram_7:example.org",)


def test_matrix_html_to_entities():
    text, entities = from_matrix(
        "fallback",
        '<mx-reply><blockquote>quoted</blockquote></mx-reply>'
        '😀 <strong>b</strong> <del>s</del> <a href="https://matrix.to/#/@telegram_7:x">Bob</a>'
        ' <a href="https://example.org/">site</a> <a href="javascript:x()">no</a>'
        ' <pre><code class="language-rust">fn</code></pre>',
        lambda mxid: 7 if mxid == "@telegram_7:x" else None)
    assert text == "😀 b s Bob site no fn"
    found = [(type(e).__name__, e.offset, e.length) for e in entities]
    assert found == [("MessageEntityBold", 3, 1), ("MessageEntityStrike", 5, 1),
                     ("InputMessageEntityMentionName", 7, 3),
                     ("MessageEntityTextUrl", 11, 4), ("MessageEntityPre", 19, 2)]
    assert entities[-1].language == "rust" and entities[2].user_id == 7
