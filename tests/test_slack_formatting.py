"""Slack mrkdwn <-> Matrix HTML and Slack emoji names: pure conversions, no servers."""

from __future__ import annotations

import pytest

from bridge.networks.slack.emoji import shortcode_to_unicode, unicode_to_shortcode
from bridge.networks.slack.formatting import matrix_to_mrkdwn, mrkdwn_to_matrix

GHOSTS = {"U1": ("@slack_u1:example.org", "Alice"), "U2": ("@slack_u2:example.org", "B<o>b")}
PORTALS = {"C1": "#slack_general:example.org"}
SLACK_IDS = {"@slack_u1:example.org": "U1", "@carol:example.org": "U3"}
PILL = '<a href="https://matrix.to/#/@slack_u1:example.org">Alice</a>'


def to_matrix(text: str):
    return mrkdwn_to_matrix(text, GHOSTS.get, PORTALS.get)


def to_slack(html: str | None, body: str = "") -> str:
    return matrix_to_mrkdwn(body, html, SLACK_IDS.get)


# --- Slack -> Matrix ----------------------------------------------------------------------

# (mrkdwn as Slack delivers it, plain body, formatted body or None)
SLACK_TO_MATRIX = [
    ("hello world", "hello world", None),
    ("", "", None),
    ("*bold*", "*bold*", "<strong>bold</strong>"),
    ("_italic_", "_italic_", "<em>italic</em>"),
    ("~strike~", "~strike~", "<del>strike</del>"),
    ("`code`", "`code`", "<code>code</code>"),
    ("a *b* c", "a *b* c", "a <strong>b</strong> c"),
    ("*two words*, then", "*two words*, then", "<strong>two words</strong>, then"),
    ("(*x*)", "(*x*)", "(<strong>x</strong>)"),
    # Nesting, both ways round.
    ("*_both_*", "*_both_*", "<strong><em>both</em></strong>"),
    ("_*both*_", "_*both*_", "<em><strong>both</strong></em>"),
    ("*bold _and italic_ here*", "*bold _and italic_ here*",
     "<strong>bold <em>and italic</em> here</strong>"),
    ("~*_all_*~", "~*_all_*~", "<del><strong><em>all</em></strong></del>"),
    # Crossed markers: the first span wins, the stray marker stays literal, output well formed.
    ("*a _b* c_", "*a _b* c_", "<strong>a _b</strong> c_"),
    # Markdown habits.
    ("**dbl**", "**dbl**", "*<strong>dbl</strong>*"),
    # Word boundaries: none of these are formatting.
    ("snake_case_name", "snake_case_name", None),
    ("call my_func_name()", "call my_func_name()", None),
    ("2*3*4", "2*3*4", None),
    ("2 * 3 * 4", "2 * 3 * 4", None),
    ("* not bold *", "* not bold *", None),
    ("*unclosed", "*unclosed", None),
    ("a ~ b ~ c", "a ~ b ~ c", None),
    ("*across\nlines*", "*across\nlines*", None),
    ("_italic_with_underscores_", "_italic_with_underscores_",
     "<em>italic_with_underscores</em>"),
    # Code keeps everything literal.
    ("`*not bold* _or_ this`", "`*not bold* _or_ this`",
     "<code>*not bold* _or_ this</code>"),
    ("`a &lt; b &amp;&amp; c`", "`a < b && c`", "<code>a &lt; b &amp;&amp; c</code>"),
    ("```\nline 1\n*line* 2\n```", "```\nline 1\n*line* 2\n```",
     "<pre><code>line 1\n*line* 2</code></pre>"),
    ("```one line```", "```one line```", "<pre><code>one line</code></pre>"),
    ("before\n```\nx\n```\nafter", "before\n```\nx\n```\nafter",
     "before<pre><code>x</code></pre>after"),
    ("```<https://x.example/a_b>```", "```https://x.example/a_b```",
     "<pre><code>https://x.example/a_b</code></pre>"),
    # Quotes: Slack sends `>` as `&gt;`; consecutive lines are one quote; `>>>` takes the rest.
    ("&gt; quoted", "> quoted", "<blockquote>quoted</blockquote>"),
    ("&gt; one\n&gt; two\nafter", "> one\n> two\nafter",
     "<blockquote>one<br>two</blockquote>after"),
    ("before\n&gt; q", "before\n> q", "before<blockquote>q</blockquote>"),
    ("&gt;&gt;&gt; all\nof\nthis", "> all\n> of\n> this",
     "<blockquote>all<br>of<br>this</blockquote>"),
    ("&gt;&gt;&gt;\nrest", "> rest", "<blockquote>rest</blockquote>"),
    ("&gt; *bold* in quote", "> *bold* in quote",
     "<blockquote><strong>bold</strong> in quote</blockquote>"),
    ("a &gt; b", "a > b", None),
    # Links.
    ("<https://example.com>", "https://example.com",
     '<a href="https://example.com">https://example.com</a>'),
    ("<https://example.com|the site>", "the site (https://example.com)",
     '<a href="https://example.com">the site</a>'),
    ("<https://example.com|example.com>", "example.com",
     '<a href="https://example.com">example.com</a>'),
    ("<https://x.example/a_b_c*d*?q=1&amp;r=2|la_bel>",
     "la_bel (https://x.example/a_b_c*d*?q=1&r=2)",
     '<a href="https://x.example/a_b_c*d*?q=1&amp;r=2">la_bel</a>'),
    ("*see <https://x.example/_y_>*", "*see https://x.example/_y_*",
     '<strong>see <a href="https://x.example/_y_">https://x.example/_y_</a></strong>'),
    ("<mailto:bob@example.com|bob@example.com>", "bob@example.com",
     '<a href="mailto:bob@example.com">bob@example.com</a>'),
    ('<https://x.example/"onclick="x|quote>', 'quote (https://x.example/"onclick="x)',
     '<a href="https://x.example/&quot;onclick=&quot;x">quote</a>'),
    # Unsafe schemes keep their text only.
    ("<javascript:alert(1)|click>", "click", None),
    ("<javascript:alert(1)>", "javascript:alert(1)", None),
    # Bare URLs (bots) are not formatting, whatever they contain.
    ("https://x.example/a_b_c and https://y.example/*x*", "https://x.example/a_b_c and "
     "https://y.example/*x*", None),
    # Escaping: Slack's entities decoded in the body, everything escaped in HTML.
    ("&lt;script&gt;alert(1)&lt;/script&gt;", "<script>alert(1)</script>", None),
    ("*&lt;script&gt;*", "*<script>*", "<strong>&lt;script&gt;</strong>"),
    ("Tom &amp; Jerry &amp;lt;", "Tom & Jerry &lt;", None),
    ("&amp;nbsp; stays", "&nbsp; stays", None),
    ("*&amp;amp;*", "*&amp;*", "<strong>&amp;amp;</strong>"),
    # A bot's unescaped `<` is not a token.
    ("a < b > c", "a < b > c", None),
    ("*x<y*", "*x<y*", "<strong>x&lt;y</strong>"),
    # Emoji.
    (":smile: :tada:", "😄 🎉", None),
    (":+1::skin-tone-2:", "👍🏻", None),
    (":party-parrot: :party_parrot:", ":party-parrot: :party_parrot:", None),
    ("*:fire:*", "*🔥*", "<strong>🔥</strong>"),
    ("`:smile:`", "`:smile:`", "<code>:smile:</code>"),
    ("at 12:30:45", "at 12:30:45", None),
    ("\r\nwindows\r\n", "\nwindows\n", None),
]


@pytest.mark.parametrize(("mrkdwn", "body", "html"), SLACK_TO_MATRIX)
def test_mrkdwn_to_matrix(mrkdwn: str, body: str, html: str | None) -> None:
    result = to_matrix(mrkdwn)
    assert (result.body, result.html) == (body, html)
    assert result.mentioned_user_ids == [] and result.mentions_room is False


# (mrkdwn, body, html, mentioned mxids, room mention)
MENTIONS = [
    ("<@U1> hi", "Alice hi", f"{PILL} hi", ["@slack_u1:example.org"], False),
    ("<@U1|alice> hi", "Alice hi", f"{PILL} hi", ["@slack_u1:example.org"], False),
    ("<@U1> <@U1>", "Alice Alice", f"{PILL} {PILL}", ["@slack_u1:example.org"], False),
    ("<@U2>", "B<o>b", '<a href="https://matrix.to/#/@slack_u2:example.org">B&lt;o&gt;b</a>',
     ["@slack_u2:example.org"], False),
    ("<@U9|zed>", "@zed", None, [], False),
    ("<@U9>", "@U9", None, [], False),
    ("*<@U1>*", "*Alice*", f"<strong>{PILL}</strong>", ["@slack_u1:example.org"], False),
    ("`<@U1>`", "`@Alice`", "<code>@Alice</code>", [], False),
    ("<#C1|general>", "#general",
     '<a href="https://matrix.to/#/#slack_general:example.org">#general</a>', [], False),
    ("<#C1|>", "#slack_general:example.org",
     '<a href="https://matrix.to/#/#slack_general:example.org">#slack_general:example.org</a>',
     [], False),
    ("<#C9|random>", "#random", None, [], False),
    ("<#C9>", "#C9", None, [], False),
    ("<!here> look", "@here look", None, [], True),
    ("<!channel>", "@channel", None, [], True),
    ("<!everyone>", "@everyone", None, [], True),
    ("<!here|@here>", "@here", None, [], True),
    ("`<!here>`", "`@here`", "<code>@here</code>", [], False),
    ("<!subteam^S123|@devs> ping", "@devs ping", None, [], False),
    ("<!subteam^S123>", "@S123", None, [], False),
    ("<!date^1392734382^{date_short}|Feb 18, 2014>", "Feb 18, 2014", None, [], False),
    ("<!date^1392734382^{date_short}>", "2014-02-18 14:39 UTC", None, [], False),
    ("<!date^nonsense>", "<date>", None, [], False),
]


@pytest.mark.parametrize(("mrkdwn", "body", "html", "users", "room"), MENTIONS)
def test_mentions(mrkdwn: str, body: str, html: str | None, users: list[str],
                  room: bool) -> None:
    result = to_matrix(mrkdwn)
    assert (result.body, result.html) == (body, html)
    assert (result.mentioned_user_ids, result.mentions_room) == (users, room)


def test_m_mentions_object() -> None:
    result = to_matrix("<!here> <@U1>")
    assert result.mentions() == {"user_ids": ["@slack_u1:example.org"], "room": True}
    assert to_matrix("plain").mentions() == {"user_ids": []}


def test_without_resolvers() -> None:
    result = mrkdwn_to_matrix("<@U1|alice> in <#C1|general>")
    assert (result.body, result.html, result.mentioned_user_ids) == (
        "@alice in #general", None, [])


@pytest.mark.parametrize("mrkdwn", [
    "*a " * 20000,
    "*_~" * 5000 + "x" + "~_*" * 5000,
    "_" * 40000,
    "&gt; x\n" * 5000,
    "`" * 40001,
    "<" * 40000 + ">",
    ":a:" * 10000,
])
def test_pathological_input_is_fast_and_well_formed(mrkdwn: str) -> None:
    result = to_matrix(mrkdwn)
    if result.html is not None:
        for tag in ("strong", "em", "del", "blockquote", "pre", "code"):
            assert result.html.count(f"<{tag}>") == result.html.count(f"</{tag}>")


# --- Matrix -> Slack ----------------------------------------------------------------------

# (Matrix formatted_body, mrkdwn)
MATRIX_TO_SLACK = [
    ("<b>bold</b> <strong>strong</strong>", "*bold* *strong*"),
    ("<i>it</i> <em>em</em>", "_it_ _em_"),
    ("<del>a</del> <s>b</s> <strike>c</strike>", "~a~ ~b~ ~c~"),
    ("<code>a*b_c</code>", "`a*b_c`"),
    ("<code><b>no</b> bold</code>", "`no bold`"),
    ("<b><i>both</i></b>", "*_both_*"),
    ("<b>bold </b>text", "*bold* text"),
    ("text<b> bold</b>", "text *bold*"),
    ("<b>a<br>b</b>", "*a*\n*b*"),
    ("<b></b>empty", "empty"),
    ("<b><b>twice</b></b>", "*twice*"),
    ("<u>under</u> <span data-mx-color='#f00'>red</span>", "under red"),
    ("<span data-mx-spoiler>secret</span>", "secret"),
    ("<h2>Title</h2>text", "*Title*\ntext"),
    ("<p>one</p><p>two</p>", "one\n\ntwo"),
    ("line<br>break", "line\nbreak"),
    ("<pre><code class=\"language-python\">x = 1 &lt; 2\nprint(x)\n</code></pre>",
     "```\nx = 1 &lt; 2\nprint(x)\n```"),
    ("<pre><code>a ``` b</code></pre>", "```\na ``\u200b` b\n```"),
    ("<pre><code><a href='https://x.example'>x</a> <b>y</b></code></pre>", "```\nx y\n```"),
    ("<blockquote>q1<br>q2</blockquote>after", "> q1\n> q2\nafter"),
    ("<blockquote><p>a</p><p>b</p></blockquote>", "> a\n>\n> b"),
    ("<ul><li>a</li><li>b</li></ul>", "• a\n• b"),
    ("<ol><li>x</li><li>y</li></ol>", "1. x\n2. y"),
    ("<ol start='9'><li>x</li><li>y</li></ol>", "9. x\n10. y"),
    ("<ul><li>a<ul><li>nested</li></ul></li></ul>", "• a\n  • nested"),
    # Links.
    ('<a href="https://example.com">site</a>', "<https://example.com|site>"),
    ('<a href="https://example.com">https://example.com</a>', "<https://example.com>"),
    ('<a href="https://x.example/?a=1&amp;b=2">q</a>', "<https://x.example/?a=1&amp;b=2|q>"),
    ('<a href="https://x.example/a|b">pipe</a>', "<https://x.example/a%7Cb|pipe>"),
    ('<a href="https://x.example/a_b*c*">u_r_l</a>', "<https://x.example/a_b*c*|u_r_l>"),
    ('<a href="mailto:bob@example.com">mail</a>', "<mailto:bob@example.com|mail>"),
    ('<a href="javascript:alert(1)">click</a>', "click"),
    ('<a>no href</a>', "no href"),
    # Pills.
    ('<a href="https://matrix.to/#/@slack_u1:example.org">Alice</a>: hi', "<@U1>: hi"),
    ('<a href="https://matrix.to/#/@carol:example.org">Carol</a>', "<@U3>"),
    ('<a href="https://matrix.to/#/@dave:example.org">Dave</a>', "Dave"),
    ('<a href="matrix:u/carol:example.org">Carol</a>', "<@U3>"),
    ('<a href="https://matrix.to/#/#room:example.org">#room:example.org</a>',
     "<https://matrix.to/#/#room:example.org|#room:example.org>"),
    # Reply fallbacks go.
    ("<mx-reply><blockquote><a href='https://matrix.to/#/@x:y'>x</a> old</blockquote>"
     "</mx-reply>new", "new"),
    # Escaping.
    ("a &lt;script&gt; &amp; b", "a &lt;script&gt; &amp; b"),
    ("<script>alert(1)</script>safe", "safe"),
    ("<b>&lt;@U1&gt;</b>", "*&lt;@U1&gt;*"),
    ("<unknown>kept</unknown> text", "kept text"),
    ("<img src='mxc://x/y' alt=':party:' data-mx-emoticon>", ":party:"),
    ("😀 stays 👍🏽", "😀 stays 👍🏽"),
]


@pytest.mark.parametrize(("html", "mrkdwn"), MATRIX_TO_SLACK)
def test_matrix_to_mrkdwn(html: str, mrkdwn: str) -> None:
    assert to_slack(html) == mrkdwn


@pytest.mark.parametrize(("body", "mrkdwn"), [
    ("plain text", "plain text"),
    ("a < b && c > d", "a &lt; b &amp;&amp; c &gt; d"),
    ("<@U1> is not a mention", "&lt;@U1&gt; is not a mention"),
    ("> <@alice:example.org> original\n> more\n\nthe reply", "the reply"),
    ("> a real quote\n\nand text", "&gt; a real quote\n\nand text"),
    ("😀 :smile:", "😀 :smile:"),
])
def test_plain_body(body: str, mrkdwn: str) -> None:
    assert to_slack(None, body) == mrkdwn


def test_room_resolver() -> None:
    html = ('<a href="https://matrix.to/#/@slack_u1:example.org">Alice</a> in '
            '<a href="https://matrix.to/#/#room:example.org">#room</a> and '
            '<a href="https://matrix.to/#/!abc:example.org">a room</a>')
    rooms = {"#room:example.org": "C7", "!abc:example.org": "C8"}
    assert matrix_to_mrkdwn("", html, SLACK_IDS.get, rooms.get) == "<@U1> in <#C7> and <#C8>"


async def test_usable_inside_a_running_event_loop() -> None:
    # The bridge calls it from its async handlers; it must not need (or start) a loop.
    assert matrix_to_mrkdwn("", "<b>x</b>") == "*x*"


# --- Round trips ----------------------------------------------------------------------------

@pytest.mark.parametrize("mrkdwn", [
    "*bold* _italic_ ~strike~ `code`",
    "*bold _nested_*",
    "snake_case stays",
    "&gt; quoted\n&gt; twice\nthen text",
    "```\nblock *code*\n```",
    "<https://example.com|label> and <https://x.example/a_b>",
    "<@U1> said hi",
    "a &amp; b &lt;c&gt;",
])
def test_slack_round_trip(mrkdwn: str) -> None:
    message = to_matrix(mrkdwn)
    back = to_slack(message.html, message.body)
    assert back == mrkdwn.replace("&gt; ", "> ")


@pytest.mark.parametrize("html", [
    "<strong>bold</strong> <em>italic</em> <del>strike</del> <code>code</code>",
    "<blockquote>a<br>b</blockquote>after",
    "<pre><code>x &lt; y</code></pre>",
    '<a href="https://example.com">label</a>',
    PILL + " hi",
])
def test_matrix_round_trip(html: str) -> None:
    assert to_matrix(to_slack(html)).html == html


# --- Emoji ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "char"), [
    ("+1", "👍"),
    ("thumbsup", "👍"),
    ("-1", "👎"),
    ("heart", "❤️"),
    (":heart:", "❤️"),
    ("joy", "😂"),
    ("tada", "🎉"),
    ("white_check_mark", "✅"),
    ("smile", "😄"),
    ("simple_smile", "🙂"),
    ("slightly_smiling_face", "🙂"),
    ("the_horns", "🤘"),
    ("face_palm", "🤦"),
    ("star-struck", "🤩"),
    ("flag-us", "🇺🇸"),
    ("rainbow-flag", "🏳️\u200d🌈"),
    ("man-woman-boy", "👨\u200d👩\u200d👦"),
    ("male-technologist", "👨\u200d💻"),
    ("woman-raising-hand", "🙋\u200d♀️"),
    ("+1::skin-tone-2", "👍🏻"),
    ("+1::skin-tone-6", "👍🏿"),
    ("point_up::skin-tone-3", "☝🏼"),
    ("woman-raising-hand::skin-tone-5", "🙋🏾\u200d♀️"),
    ("skin-tone-4", "🏽"),
    ("heart::skin-tone-2", "❤️"),
    ("party-parrot", None),
    ("flag-zz", None),
    ("x:smile", None),
    ("", None),
    ("::", None),
])
def test_shortcode_to_unicode(name: str, char: str | None) -> None:
    assert shortcode_to_unicode(name) == char


@pytest.mark.parametrize(("char", "name"), [
    ("👍", "+1"),
    ("👎", "-1"),
    ("❤️", "heart"),
    ("❤", "heart"),
    ("😂", "joy"),
    ("🎉", "tada"),
    ("✅", "white_check_mark"),
    ("😄", "smile"),
    ("🙂", "slightly_smiling_face"),
    ("☺️", "relaxed"),
    ("☺", "relaxed"),
    ("🇺🇸", "flag-us"),
    ("👨\u200d👩\u200d👦", "man-woman-boy"),
    ("👍🏻", "+1::skin-tone-2"),
    ("👍🏿", "+1::skin-tone-6"),
    ("☝🏼", "point_up::skin-tone-3"),
    ("☝️🏼", "point_up::skin-tone-3"),
    ("🏽", "skin-tone-4"),
    ("x", None),
    ("👍👍", None),
    ("", None),
])
def test_unicode_to_shortcode(char: str, name: str | None) -> None:
    assert unicode_to_shortcode(char) == name


@pytest.mark.parametrize("name", [
    "+1", "-1", "heart", "joy", "tada", "white_check_mark", "fire", "eyes", "100", "pray",
    "rocket", "flag-us", "man-woman-boy", "+1::skin-tone-2", "wave::skin-tone-5",
])
def test_reaction_round_trip(name: str) -> None:
    char = shortcode_to_unicode(name)
    assert char is not None
    assert unicode_to_shortcode(char) == name
    # Matrix clients differ on the variation selector; both spellings map back.
    assert unicode_to_shortcode(char.replace("\ufe0f", "")) == name
