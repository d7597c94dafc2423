"""Discord markdown <-> Matrix HTML, both ways, as people write it."""

from __future__ import annotations

import pytest

from bridge.networks.discord.formatting import discord_to_matrix, matrix_to_discord, pills

GHOST = "@discord_1:localhost"


def users(uid: str):
    return (GHOST, "Bobby") if uid == "1" else None


def to_matrix(text: str):
    return discord_to_matrix(text, users, lambda rid: "Mods" if rid == "7" else None,
                             lambda cid: "general" if cid == "5" else None)


@pytest.mark.parametrize(("text", "html"), [
    ("**bold** *it* _it_ __under__ ~~gone~~ ||secret||",
     "<strong>bold</strong> <em>it</em> <em>it</em> <u>under</u> <del>gone</del> "
     "<span data-mx-spoiler>secret</span>"),
    ("`a*b`", "<code>a*b</code>"),
    ("```py\nprint(1)\n```", '<pre><code class="language-py">print(1)</code></pre>'),
    ("> quoted\nnot", "<blockquote>quoted</blockquote>not"),
    ("# Title\n-# small print", "<h1>Title</h1><sub>small print</sub>"),
    ("[docs](https://example.org/d)", '<a href="https://example.org/d">docs</a>'),
    ("<b>not html</b> & **x**", "&lt;b&gt;not html&lt;/b&gt; &amp; <strong>x</strong>"),
])
def test_discord_markdown_becomes_matrix_html(text, html):
    assert to_matrix(text).html == html


def test_mentions_channels_roles_and_custom_emoji():
    formatted = to_matrix("hi <@1> and <@!1>, see <#5>, ask <@&7> <:party:99> @everyone")
    assert formatted.body == "hi Bobby and Bobby, see #general, ask @Mods :party: @everyone"
    assert formatted.html.count(f'href="https://matrix.to/#/{GHOST}"') == 2
    assert formatted.mentioned_user_ids == (GHOST,)
    assert formatted.mentions_room
    unknown = to_matrix("<@42> was here")
    assert unknown.body == "@42 was here" and not unknown.mentioned_user_ids


def test_plain_text_stays_plain_and_unpaired_markers_stay():
    assert to_matrix("2 * 3 = 6").html is None
    assert to_matrix("2 * 3 = 6").body == "2 * 3 = 6"
    assert to_matrix("**bold**").body == "bold"


@pytest.mark.parametrize(("html", "markdown"), [
    ("hi <b>Bob</b>", "hi **Bob**"),
    ("<em>it</em> <u>u</u> <del>s</del> <span data-mx-spoiler>sp</span>",
     "*it* __u__ ~~s~~ ||sp||"),
    ('<pre><code class="language-py">x = 1\n</code></pre>', "```py\nx = 1\n```"),
    ("<code>a*b</code>", "`a*b`"),
    ("<blockquote><p>q</p></blockquote><p>after</p>", "> q\nafter"),
    ("<h2>Head</h2>", "## Head"),
    ('<a href="https://e.org">link</a>', "[link](https://e.org)"),
    ("<mx-reply><blockquote>old</blockquote></mx-reply>new", "new"),
    ("2*3 is <b>six</b>", "2\\*3 is **six**"),
])
def test_matrix_html_becomes_discord_markdown(html, markdown):
    assert matrix_to_discord("ignored", html, lambda mxid: None) == markdown


def test_pills_become_mentions_of_known_people():
    html = ('<a href="https://matrix.to/#/@alice:localhost">Alice</a> and '
            '<a href="https://matrix.to/#/@nobody:localhost">Nobody</a>')
    assert pills(html) == ["@alice:localhost", "@nobody:localhost"]
    assert matrix_to_discord("x", html, {"@alice:localhost": "42"}.get) == "<@42> and Nobody"


def test_a_message_without_html_is_sent_as_typed():
    assert matrix_to_discord("**as typed**", None, lambda mxid: None) == "**as typed**"
