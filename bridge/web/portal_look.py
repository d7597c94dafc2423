"""The look of every page the bridge serves: one stylesheet, the layout with its header, form
pieces (every field labelled) and the error page. Server-rendered; nothing needs JavaScript."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

import attrs

# A type scale of 1.25 (0.8, 1, 1.25, 1.563, 1.953 rem) and spacing steps of 0.25 rem.
STYLE = """
:root{--s1:.25rem;--s2:.5rem;--s3:.75rem;--s4:1rem;--s5:1.5rem;--s6:2rem;--s7:3rem;
--fg:#1c1b1f;--muted:#5f6368;--line:#dadce0;--bg:#f8f9fb;--card:#fff;--accent:#0b57d0;
--accent-fg:#fff;--ok:#137333;--ok-bg:#e6f4ea;--bad:#b3261e;--bad-bg:#fce8e6;--warn:#7a4a00;
--warn-bg:#fef7e0;--radius:.5rem}
*{box-sizing:border-box}
html{font-size:100%}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:1rem;
line-height:1.5;color:var(--fg);background:var(--bg)}
a{color:var(--accent)}a:focus-visible,button:focus-visible,input:focus-visible,
select:focus-visible{outline:3px solid #a8c7fa;outline-offset:2px}
.site-header{background:var(--card);border-bottom:1px solid var(--line)}
.site-header .bar{max-width:56rem;margin:0 auto;padding:var(--s3) var(--s4);display:flex;
flex-wrap:wrap;gap:var(--s2) var(--s4);align-items:center;justify-content:space-between}
.brand{font-weight:700;font-size:1.25rem;text-decoration:none;color:var(--fg)}
.who{font-size:.8rem;color:var(--muted);overflow-wrap:anywhere}
.who strong{color:var(--fg);font-weight:600}
.site-nav{max-width:56rem;margin:0 auto;padding:0 var(--s4) var(--s2);display:flex;
flex-wrap:wrap;gap:var(--s1) var(--s4);font-size:.8rem}
.site-nav a{text-decoration:none;padding:var(--s1) 0}
.site-nav a[aria-current=page]{font-weight:700;text-decoration:underline}
main{max-width:56rem;margin:0 auto;padding:var(--s5) var(--s4) var(--s7)}
h1{font-size:1.953rem;line-height:1.2;margin:0 0 var(--s4)}
h2{font-size:1.563rem;line-height:1.25;margin:var(--s5) 0 var(--s3)}
h3{font-size:1.25rem;line-height:1.3;margin:var(--s4) 0 var(--s2)}
p{margin:0 0 var(--s3)}small,.hint{font-size:.8rem;color:var(--muted)}
.card{background:var(--card);border:1px solid var(--line);border-radius:var(--radius);
padding:var(--s4) var(--s5);margin:0 0 var(--s4)}
.card>:last-child{margin-bottom:0}.card>:first-child{margin-top:0}
.notice{border-radius:var(--radius);padding:var(--s3) var(--s4);margin:0 0 var(--s4);
white-space:pre-line;overflow-wrap:anywhere}
main h1,main h2,main h3,main p,main li,main td,summary{overflow-wrap:anywhere}
.notice.ok{background:var(--ok-bg);color:var(--ok)}.notice.bad{background:var(--bad-bg);
color:var(--bad)}.notice.warn{background:var(--warn-bg);color:var(--warn)}
.ok{color:var(--ok)}.error{color:var(--bad)}
label{display:block;font-weight:600;margin:0 0 var(--s1)}
.field{margin:0 0 var(--s4)}
input[type=text],input[type=password],input[type=tel],input[type=search],select{
font:inherit;width:100%;max-width:28rem;padding:var(--s2) var(--s3);border:1px solid #80868b;
border-radius:var(--s1);background:#fff;color:var(--fg)}
input[type=checkbox]{width:1.1rem;height:1.1rem;vertical-align:middle;margin-right:var(--s2)}
.check label{display:inline;font-weight:400}
button,.button{font:inherit;font-size:.95rem;font-weight:600;padding:var(--s2) var(--s4);
margin:0 var(--s2) var(--s2) 0;border-radius:var(--s1);border:1px solid var(--accent);
background:var(--accent);color:var(--accent-fg);cursor:pointer;text-decoration:none;
display:inline-block;line-height:1.4}
.secondary{background:#fff;color:var(--accent)}
.danger{background:var(--bad);border-color:var(--bad);color:#fff}
form.inline{display:inline}
.actions{display:flex;flex-wrap:wrap;gap:var(--s2);margin-top:var(--s2)}
.actions form,.actions a{margin:0}.actions button,.actions .button{margin:0}
.sign-out button{margin:0}
table{border-collapse:collapse;width:100%;font-size:.95rem}
th,td{padding:var(--s2) var(--s3);text-align:left;border-bottom:1px solid var(--line);
vertical-align:top;overflow-wrap:anywhere}
th{font-size:.8rem;text-transform:uppercase;letter-spacing:.03em;color:var(--muted)}
.status{display:inline-block;font-size:.8rem;font-weight:600;padding:0 var(--s2);
border-radius:1rem;background:#e8eaed}
.status-active{background:var(--ok-bg);color:var(--ok)}
.status-paused,.status-needs_reauth,.status-read_only{background:var(--warn-bg);
color:var(--warn)}.status-revoked{background:var(--bad-bg);color:var(--bad)}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em;
overflow-wrap:anywhere}
.consent{white-space:pre-line;border-left:4px solid var(--accent);padding-left:var(--s4)}
.filters{display:flex;flex-wrap:wrap;gap:var(--s3);align-items:flex-end}
.filters .field{margin:0;min-width:10rem;flex:1}
.pager{display:flex;gap:var(--s3);margin-top:var(--s4)}
.sign-out{float:right}
@media (max-width:40rem){main{padding:var(--s4) var(--s3) var(--s6)}h1{font-size:1.563rem}
h2{font-size:1.25rem}h3{font-size:1rem}.card{padding:var(--s3) var(--s4)}
table.stack thead{display:none}table.stack tr{display:block;border-bottom:1px solid var(--line);
padding:var(--s2) 0}table.stack td{display:block;border:0;padding:var(--s1) 0}
table.stack td[data-label]::before{content:attr(data-label) ": ";font-weight:600}}
"""

# The portal's sections, in the header of every signed-in page.
NAV = (("/account", "Home"), ("/account/link", "Link a network"),
       ("/account/rules", "Mapping rules"), ("/account/sign-in-methods", "Sign-in methods"),
       ("/account/sessions", "Sessions"), ("/account/audit", "Audit trail"),
       ("/account/settings", "Settings"))


@attrs.frozen
class Viewer:
    """Who is signed in, as every page's header shows it."""
    account_id: str
    matrix_user: str | None
    csrf: str


def hidden(**fields: str) -> str:
    return "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
                   for k, v in fields.items())


def header(viewer: Viewer | None, current: str = "") -> str:
    if viewer is None:
        return ('<header class="site-header"><div class="bar"><a class="brand" href="/">'
                "RelayForge</a></div></header>")
    who = (f"<strong>{escape(viewer.matrix_user)}</strong>" if viewer.matrix_user
           else "<strong>no Matrix user</strong>")
    nav = "".join(
        f'<a href="{href}"{" aria-current=page" if href == current else ""}>{label}</a>'
        for href, label in NAV)
    return f"""<header class="site-header"><div class="bar">
<a class="brand" href="/" id="home">RelayForge</a>
<span class="who" id="signed-in-as">Signed in as {who} &middot; account
<span class="mono">{escape(viewer.account_id)}</span></span>
<form method="post" action="/auth/sign-out" class="sign-out-header">{hidden(csrf=viewer.csrf)}
<button id="sign-out" class="secondary" type="submit">Sign out</button></form>
</div><nav class="site-nav" aria-label="Account">{nav}</nav></header>"""


def layout(title: str, body: str, viewer: Viewer | None = None, current: str = "",
           notice: str | None = None, problem: str | None = None) -> str:
    flash = ""
    if notice:
        flash += f'<p class="notice ok" id="notice" role="status">{escape(notice)}</p>'
    if problem:
        flash += f'<p class="notice bad" id="problem" role="alert">{escape(problem)}</p>'
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)} - RelayForge</title><style>{STYLE}</style></head>"
            f"<body>{header(viewer, current)}<main>{flash}{body}</main></body></html>")


# The heading of an error page, by status: what happened in the person's words.
ERROR_TITLES = {400: "That did not work", 401: "Sign in first", 403: "Not allowed",
                404: "Not found", 405: "Not possible here", 413: "Too large",
                415: "That did not work", 429: "Too many requests", 503: "Not ready"}


def error_page(message: str, status: int = 400, title: str | None = None,
               viewer: Viewer | None = None) -> str:
    """A refusal as a page: what is wrong in the bot's words, and a way back (home, which is
    the portal when signed in and the sign-in page otherwise)."""
    title = title or ERROR_TITLES.get(status, "Something went wrong" if status >= 500
                                      else "That did not work")
    return layout(title, f"""<div class="card" id="error">
<h1 class="error">{escape(title)}</h1>
<p id="error-message">{escape(message)}</p>
<p class="hint">Error {status}.</p>
<div class="actions"><a class="button" id="back" href="/">Back to your account</a>
<a class="button secondary" href="/auth/sign-in">Sign in</a></div></div>""", viewer)


def field(label: str, name: str, *, kind: str = "text", value: str = "",
          required: bool = True, hint: str = "", autocomplete: str = "off",
          element_id: str | None = None) -> str:
    """A labelled input. Secrets (`kind="password"`) are never given a value back."""
    element_id = element_id or f"f-{name}"
    shown = "" if kind == "password" else value
    hint_html = (f'<div class="hint" id="{element_id}-hint">{escape(hint)}</div>' if hint
                 else "")
    described = f' aria-describedby="{element_id}-hint"' if hint else ""
    return (f'<div class="field"><label for="{escape(element_id)}">{escape(label)}</label>'
            f'<input type="{kind}" id="{escape(element_id)}" name="{escape(name)}" '
            f'value="{escape(shown)}" autocomplete="{autocomplete}"'
            f'{" required" if required else ""}{described}>{hint_html}</div>')


def select(label: str, name: str, options: Iterable[tuple[str, str]], selected: str = "",
           element_id: str | None = None, blank: str | None = None) -> str:
    element_id = element_id or f"f-{name}"
    choices = f'<option value="">{escape(blank)}</option>' if blank is not None else ""
    choices += "".join(
        f'<option value="{escape(v)}"{" selected" if v == selected else ""}>{escape(t)}'
        "</option>" for v, t in options)
    return (f'<div class="field"><label for="{escape(element_id)}">{escape(label)}</label>'
            f'<select id="{escape(element_id)}" name="{escape(name)}">{choices}</select></div>')


def checkbox(label: str, name: str, element_id: str | None = None) -> str:
    element_id = element_id or f"f-{name}"
    return (f'<div class="field check"><input type="checkbox" id="{escape(element_id)}" '
            f'name="{escape(name)}" value="1"><label for="{escape(element_id)}">'
            f"{escape(label)}</label></div>")


def post_button(action: str, label: str, csrf: str, *, kind: str = "",
                element_id: str | None = None, **fields: str) -> str:
    """A one-button form (a POST with this browser's token)."""
    attr = f' id="{escape(element_id)}"' if element_id else ""
    cls = f' class="{kind}"' if kind else ""
    return (f'<form method="post" class="inline" action="{escape(action)}">'
            f"{hidden(csrf=csrf, **fields)}<button type=\"submit\"{cls}{attr}>{escape(label)}"
            "</button></form>")


def link_button(href: str, label: str, *, kind: str = "secondary",
                element_id: str | None = None) -> str:
    attr = f' id="{escape(element_id)}"' if element_id else ""
    return f'<a class="button {kind}" href="{escape(href)}"{attr}>{escape(label)}</a>'


def confirm_body(question: str, explain: str, action: str, label: str, csrf: str,
                 back: str, *, danger: bool = False, **fields: str) -> str:
    """Ask before an action: nothing happens until the button is pressed (a GET of this page
    changes nothing)."""
    return f"""<div class="card"><h1>{escape(question)}</h1><p>{escape(explain)}</p>
<div class="actions">{post_button(action, label, csrf, kind="danger" if danger else "",
                                  element_id="confirm", **fields)}
{link_button(back, "Cancel", element_id="cancel")}</div></div>"""
