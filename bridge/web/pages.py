"""The server-rendered pages: plain HTML forms that work without JavaScript."""

from __future__ import annotations

from html import escape

import attrs

from .. import words
from .portal_look import Viewer, hidden, layout
from .portal_look import error_page as styled_error


def page(title: str, body: str, viewer: Viewer | None = None, current: str = "") -> str:
    return layout(title, body, viewer, current)


def sign_out_form(csrf: str) -> str:
    """On every page of a signed-in browser: a POST (with this browser's token), so another
    site cannot sign people out, and a link prefetcher cannot either."""
    return (f'<form method="post" action="/auth/sign-out" class="sign-out">{hidden(csrf=csrf)}'
            '<button id="sign-out" class="secondary" type="submit">Sign out</button></form>')


@attrs.frozen
class AccountSummary:
    """What a person needs to see to recognise an account before it is changed."""
    account_id: str
    matrix_users: list[str]
    profiles: list[str]
    providers: list[str]
    credits: int


def account_card(element_id: str, title: str, account: AccountSummary) -> str:
    def listed(items: list[str]) -> str:
        return escape(", ".join(items) or "none")
    return f"""<div class="card" id="{escape(element_id)}">
  <h2>{escape(title)}</h2>
  <p>Matrix users: {listed(account.matrix_users)}</p>
  <p>Profiles: {listed(account.profiles)}</p>
  <p>Sign-in providers: {listed(account.providers)}</p>
  <p>Credits: {account.credits}</p>
  <p><small>RelayForge account {escape(account.account_id)}</small></p>
</div>"""


def provider_buttons(providers: list[tuple[str, str]], purpose: str, label: str) -> str:
    return "".join(
        f'<a class="button secondary" id="{escape(purpose)}-{escape(pid)}" '
        f'href="/oauth/{escape(pid)}/start?purpose={escape(purpose)}">'
        f"{escape(label)} {escape(name)}</a>"
        for pid, name in providers)


def sign_in_page(providers: list[tuple[str, str]]) -> str:
    return page("Sign in", "<h1>Sign in to RelayForge</h1>"
                f'<div class="card">{provider_buttons(providers, "signin", "Continue with")}'
                '<p>Or send <code>login-link</code> to the RelayForge bot in Matrix.</p></div>')


def account_choice_page(email: str | None, provider_name: str, pending_id: str, csrf: str,
                        providers: list[tuple[str, str]]) -> str:
    who = escape(email or "an account without an email address")
    return page("Choose your account", f"""
<h1>One more step</h1>
<p>You've authenticated as <strong>{who}</strong> with {escape(provider_name)}.</p>
<div class="card">
  <h2>Create new RelayForge account</h2>
  <form method="post" action="/auth/account-choice/create">
    {hidden(session=pending_id, csrf=csrf)}
    <button id="create-new" type="submit">Create new RelayForge account</button>
  </form>
</div>
<div class="card">
  <h2>Sign in with existing account to link</h2>
  <p>Prove it is yours by signing in to it; then {escape(provider_name)} is linked to it.</p>
  {provider_buttons(providers, "link", "Continue with")}
  <p>Or send <code>login-link</code> to the RelayForge bot in Matrix and open its link in
  this browser.</p>
</div>""")


def confirm_link_page(provider_name: str, email: str | None, pending_id: str, existing_id: str,
                      csrf: str) -> str:
    return page("Link accounts", f"""
<h1>Link {escape(provider_name)} to your account?</h1>
<p>{escape(provider_name)} ({escape(email or "no email")}) will become a way to sign in to the
account you just signed in to.</p>
<form method="post" action="/api/account/complete-linking">
  {hidden(pendingSessionId=pending_id, existingSessionId=existing_id, csrf=csrf)}
  <button id="confirm-link" type="submit">Link accounts</button>
</form>""")


def matrix_sign_in_page(mxid: str, token: str, csrf: str,
                        linking: tuple[str, str | None] | None = None) -> str:
    """The bot's login link asks before it signs anyone in: opening it (or a link preview
    fetching it) changes nothing."""
    if linking is None:
        question = f"Sign in to RelayForge as {mxid}?"
        explain = (f"<p>This browser will be signed in to the RelayForge account of "
                   f"<strong>{escape(mxid)}</strong>. Continue only if you asked the bot for "
                   "this link yourself.</p>")
        label = "Sign in"
    else:
        name, email = linking
        question = f"Link {name} to the account of {mxid}?"
        explain = (f"<p>{escape(name)} ({escape(email or 'no email')}) will become a way to "
                   f"sign in to the RelayForge account of <strong>{escape(mxid)}</strong>.</p>")
        label = "Link accounts"
    return page(question, f"""
<h1>{escape(question)}</h1>{explain}
<form method="post" action="/auth/matrix">
  {hidden(token=token, csrf=csrf)}
  <button id="confirm-matrix-sign-in" type="submit">{escape(label)}</button>
  <a class="button secondary" href="/auth/sign-in">Cancel</a>
</form>""")


def link_start_page(network: str, profile: str, account: AccountSummary, token: str,
                    csrf: str) -> str:
    """Before a network's consent page: whose RelayForge account the network account will be
    linked into, so nobody links their account into someone else's by following a link."""
    return page(f"Link {network}", f"""
<h1>Link a {escape(network)} account to RelayForge?</h1>
<p>The {escape(network)} account you allow on the next page will be linked to this
RelayForge account, in its profile <strong>{escape(profile)}</strong>, and RelayForge will act
there as you. Continue only if you asked for this link yourself, and this is your account:</p>
{account_card("link-target", "Links to", account)}
<form method="post" action="">
  {hidden(flow=token, csrf=csrf)}
  <button id="continue-link" type="submit">Continue to {escape(network)}</button>
</form>""")


def linked_page(provider_name: str, email: str | None, csrf: str) -> str:
    return page("Accounts linked", f"""{sign_out_form(csrf)}
<h1 class="ok" id="success">&#10003; Accounts successfully linked!</h1>
<p>Your {escape(provider_name)} ({escape(email or "no email")}) is now connected to your
account.</p>
<p>All your linked chats are reachable from one RelayForge account.</p>
<p><a class="button" href="/account/settings">Account settings</a></p>""")


def settings_page(emails: list[str], providers: list[str], matrix_users: list[str],
                  credits: int, merge_providers: list[tuple[str, str]], csrf: str,
                  notice: str | None = None, agents_url: str | None = None,
                  viewer: Viewer | None = None) -> str:
    """With `viewer`, the page has the portal's header (its sign-out button among it)."""
    flash = f'<p class="notice ok" id="notice">{escape(notice)}</p>' if notice else ""
    agents = (f'<div class="card"><h2>AI agents</h2><p><a id="agents" href="{escape(agents_url)}">'
              "The agents you allowed to act as you</a>: what each may do; revoke.</p></div>"
              if agents_url else "")
    return page("Account settings", f"""{"" if viewer else sign_out_form(csrf)}
<h1>Account Management</h1>{flash}
<div class="card">
  <p id="linked-emails">Linked emails: {escape(", ".join(emails) or "none")}</p>
  <p id="connected-providers">{words.SIGN_IN_METHODS}: {escape(", ".join(providers) or "none")}
  (<a href="/account/sign-in-methods">change</a>)</p>
  <p id="matrix-users">Matrix users: {escape(", ".join(matrix_users) or "none")}</p>
  <p id="credits">Credits: {credits}</p>
</div>
<div class="card">
  <h2>Merge another account</h2>
  <p>Sign in to your other RelayForge account; it is merged into this one (credits,
  connections and profiles).</p>
  {provider_buttons(merge_providers, "merge", "Merge another account:")}
</div>{agents}""", viewer, "/account/settings")


def confirm_merge_page(provider_name: str, merge_id: str, csrf: str, into: AccountSummary,
                       source: AccountSummary) -> str:
    return page("Merge accounts", f"""{sign_out_form(csrf)}
<h1>Merge the other account into this one?</h1>
<p>The account you signed in to with {escape(provider_name)} will be merged into the account
you are signed in to: its Matrix users, sign-in providers, profiles and credits move, and it
stops existing. Support can reverse a merge if needed.</p>
{account_card("merge-from", "Merged (the other account)", source)}
{account_card("merge-into", "Into (the account you are signed in to)", into)}
<form method="post" action="/account/merge">
  {hidden(mergeSessionId=merge_id, csrf=csrf)}
  <button id="confirm-merge" type="submit">Merge accounts</button>
</form>""")


def merged_page(credits: int, providers: list[str], csrf: str) -> str:
    return page("Accounts merged", f"""{sign_out_form(csrf)}
<h1 class="ok" id="success">&#10003; Accounts merged!</h1>
<p>{credits} credits and {len(providers)} sign-in provider(s)
({escape(", ".join(providers) or "none")}) moved to this account.</p>
<p><a class="button" href="/account/settings">Account settings</a></p>""")


def error_page(message: str, status_title: str | None = None, status: int = 400) -> str:
    return styled_error(message, status, status_title)
