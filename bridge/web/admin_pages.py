"""The support dashboard's HTML: search, an account's page, and the merge/reverse
confirmations. Words follow the bot's `account` and `admin` commands."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from html import escape
from urllib.parse import quote

import attrs

from ..db.account_merge import MergeRecord
from ..db.audit_log import AuditRow
from ..identity.accounts import AccountView
from . import pages
from .portal_look import field


@attrs.frozen
class Names:
    """How the page names people: providers by their display name, Matrix users with the
    display name the homeserver sent (the admin who merged, by name)."""
    providers: Mapping[str, str]
    people: Mapping[str, str]

    def person(self, who: str) -> str:
        if who.startswith("@"):
            name = self.people.get(who)
            return f"{name} ({who})" if name else who
        if who.startswith("acct_"):
            return f"the account holder ({who})"
        return who

    def provider(self, provider_id: str) -> str:
        return self.providers.get(provider_id, provider_id)


def _id(value: str) -> str:
    """An id in a heading: it may break anywhere, so a phone's screen holds it."""
    return f'<span class="mono">{escape(value)}</span>'


def when(ms: int | None) -> str:
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))


def account_link(account_id: str) -> str:
    return (f'<a href="/admin/accounts/{quote(account_id, safe="")}">'
            f"{escape(account_id)}</a>")


def search_form(query: str) -> str:
    return f"""<form method="get" action="/admin/dashboard" class="card" role="search">
{field("Find an account", "q", kind="search", value=query, required=False, element_id="q",
       hint="Part of a Matrix user (its localpart will do), of a sign-in email address, or of "
            "an account id; upper or lower case.")}
<button type="submit" id="find">Find</button>
</form>"""


@attrs.frozen
class Match:
    account_id: str
    status: str
    matrix_users: list[str]
    emails: list[str]
    created_at: int


def results(query: str, matches: list[Match], more: bool, limit: int) -> str:
    if not query:
        return ""
    if not matches:
        return f'<p id="no-match">No account matches &ldquo;{escape(query)}&rdquo;.</p>'
    rows = "".join(
        f'<tr><td data-label="Account">{account_link(m.account_id)}</td>'
        f'<td data-label="Status">{escape(m.status)}</td>'
        f'<td data-label="Matrix users">{escape(", ".join(m.matrix_users) or "none")}</td>'
        f'<td data-label="Sign-in emails">{escape(", ".join(m.emails) or "none")}</td>'
        f'<td data-label="Created">{when(m.created_at)}</td></tr>'
        for m in matches)
    note = (f'<p id="more-matches">Only the newest {limit} matches are shown: type more of '
            "the name, address or id to narrow the search.</p>" if more else "")
    return f"""<h2 id="results-heading">Accounts matching &ldquo;{escape(query)}&rdquo;</h2>
{note}<table class="stack" id="results" aria-labelledby="results-heading">
<thead><tr><th scope="col">Account</th><th scope="col">Status</th>
<th scope="col">Matrix users</th><th scope="col">Sign-in emails</th>
<th scope="col">Created</th></tr></thead><tbody>{rows}</tbody></table>"""


def _status(view: AccountView) -> str:
    account = view.account
    if account.merged_into:
        return f"{escape(account.status.value)} into {account_link(account.merged_into)}"
    return escape(account.status.value)


def _summary(view: AccountView, names: Names) -> str:
    users = ", ".join(escape(names.person(m)) for m in view.matrix_users) or "none"
    return f"""<table class="facts">
<tr><th scope="row">Status</th><td>{_status(view)}</td></tr>
<tr><th scope="row">Created</th><td>{when(view.account.created_at)}</td></tr>
<tr><th scope="row">Credits</th><td>{view.account.credits}</td></tr>
<tr><th scope="row">Matrix users</th><td>{users}</td></tr>
</table>"""


def _identities(view: AccountView, names: Names) -> str:
    if not view.identities:
        return "<p>No sign-in methods but the Matrix account (login-link).</p>"
    rows = "".join(
        f'<tr><td data-label="Provider">{escape(names.provider(i.provider_id))}</td>'
        f'<td data-label="Email">{escape(i.email or "no email")} '
        f"({'verified' if i.email_verified else 'unverified'})</td>"
        f'<td data-label="Added how">{escape(i.added_how)}</td>'
        f'<td data-label="Added">{when(i.added_at)}</td></tr>'
        for i in view.identities)
    return ('<table class="stack" id="sign-in-methods"><thead><tr>'
            '<th scope="col">Provider</th><th scope="col">Email</th>'
            '<th scope="col">Added how</th><th scope="col">Added</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _profiles(view: AccountView) -> str:
    parts = []
    for profile_view in view.profiles:
        profile = profile_view.profile
        space = (f'<p class="hint">Space <span class="mono">{escape(profile.space_mxid)}'
                 "</span></p>" if profile.space_mxid else "")
        personas = "".join(
            f"<li>{escape(p.platform)}:{escape(p.external_user_id)} "
            f"({escape(p.display_name or p.external_user_id)}) - "
            f'<span class="status status-{escape(p.status.value)}">'
            f"{escape(p.status.value)}</span>, linked "
            f"{when(p.created_at)}</li>"
            for p in profile_view.personas) or "<li>no linked accounts</li>"
        parts.append(f"<h3>{escape(profile.name)}</h3>{space}<ul>{personas}</ul>")
    return "".join(parts) or "<p>No profiles.</p>"


def _merges(records: list[MergeRecord], names: Names) -> str:
    if not records:
        return '<p id="no-merges">No merges.</p>'
    rows = []
    for r in records:
        if r.reversed_at:
            state = (f"reversed {when(r.reversed_at)} by "
                     f"{escape(names.person(r.reversed_by or 'unknown'))}")
        else:
            state = (f'in effect <a class="button secondary" id="unmerge-{escape(r.id)}" '
                     f'aria-label="Reverse merge {escape(r.id)}" '
                     f'href="/admin/unmerge?merge_id={quote(r.id, safe="")}">Reverse</a>')
        rows.append(f'<tr><td data-label="Merged">{when(r.merged_at)}</td>'
                    f'<td data-label="Accounts">{account_link(r.from_account)} '
                    f"into {account_link(r.into_account)}</td>"
                    f'<td data-label="By">{escape(names.person(r.actor))}</td>'
                    f'<td data-label="State">{state}</td>'
                    f'<td data-label="Merge"><small>{escape(r.id)}</small></td></tr>')
    return ('<table class="stack" id="merges"><thead><tr>'
            '<th scope="col">Merged</th><th scope="col">Accounts</th><th scope="col">By</th>'
            '<th scope="col">State</th><th scope="col">Merge</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def audit_words(row: AuditRow) -> str:
    """One record in words: what happened, where, and its details (the bot's `audit` shows
    the same record with its raw names)."""
    details = json.loads(row.details)
    head = row.event_type.replace("_", " ")
    what = details.pop("what", None)
    if isinstance(what, str):
        head += f": {what.replace('_', ' ')}"
    text = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sorted(details.items())
                     if v not in (None, ""))
    where = "/".join(p for p in (row.profile, row.persona) if p)
    return " ".join(part for part in (head, f"({where})" if where else "",
                                      f"- {text}" if text else "") if part)


def _audit(rows: list[AuditRow], names: Names, limit: int) -> str:
    if not rows:
        return "<p>No audit records.</p>"
    body = "".join(
        f'<tr><td data-label="#">{row.seq}</td>'
        f'<td data-label="When (UTC)">{escape(row.ts[:19].replace("T", " "))}</td>'
        f'<td data-label="By">{escape(names.person(row.actor))}</td>'
        f'<td data-label="What">{escape(audit_words(row))}</td></tr>'
        for row in reversed(rows))
    return (f"<p>The newest {limit} records, newest first (the bot's "
            "<code>audit @user</code> and the audit CLI read the whole trail).</p>"
            '<table class="stack" id="audit"><thead><tr><th scope="col">#</th>'
            '<th scope="col">When (UTC)</th><th scope="col">By</th>'
            f'<th scope="col">What</th></tr></thead><tbody>{body}</tbody></table>')


def merge_form(account_id: str) -> str:
    return f"""<h3>Merge another account into this one</h3>
<form method="get" action="/admin/merge" id="merge-form">
{pages.hidden(into=account_id)}
{field("Account id to merge into this one", "from", element_id="merge-from",
       hint="You will see both accounts and confirm before anything changes.")}
<button type="submit" id="merge-review">Review merge</button>
</form>"""


def account_page(view: AccountView, names: Names, merges: list[MergeRecord],
                 audit: list[AuditRow], audit_limit: int, notice: str | None) -> str:
    account_id = view.account.id
    flash = (f'<p class="notice ok" id="notice" role="status">{escape(notice)}</p>'
             if notice else "")
    merge = (merge_form(account_id) if view.account.status.value == "active"
             else "<p>A merged account cannot take in another.</p>")
    return f"""<p><a href="/admin/dashboard">&larr; Support dashboard</a></p>
<h1 id="account-heading">Account {_id(account_id)}</h1>{flash}
<section class="card" id="account-{escape(account_id)}" aria-labelledby="account-heading">
{_summary(view, names)}</section>
<section class="card" aria-labelledby="h-sign-in"><h2 id="h-sign-in">Sign-in methods</h2>
{_identities(view, names)}</section>
<section class="card" aria-labelledby="h-profiles"><h2 id="h-profiles">Profiles and linked
accounts</h2>{_profiles(view)}</section>
<section class="card" aria-labelledby="h-merges"><h2 id="h-merges">Merges</h2>
{_merges(merges, names)}{merge}</section>
<section class="card" aria-labelledby="h-audit"><h2 id="h-audit">Audit trail</h2>
{_audit(audit, names, audit_limit)}</section>"""


def confirm_merge(into: pages.AccountSummary, source: pages.AccountSummary,
                  csrf: str) -> str:
    return f"""<h1>Merge account {_id(source.account_id)} into
{_id(into.account_id)}?</h1>
<p>Everything of the first account moves into the second: Matrix users, sign-in methods,
profiles (profiles of the same name become one), linked accounts and credits. The first
account stays behind as a tombstone, and the merge can be reversed from either account's
page.</p>
{pages.account_card("merge-from", "Merged (goes away)", source)}
{pages.account_card("merge-into", "Into (kept)", into)}
<form method="post" action="/admin/merge" class="actions">
  {pages.hidden(into=into.account_id, csrf=csrf, **{"from": source.account_id})}
  <button type="submit" id="admin-merge">Merge {escape(source.account_id)} into
  {escape(into.account_id)}</button>
  <a class="button secondary" id="cancel"
   href="/admin/accounts/{quote(into.account_id, safe="")}">Cancel</a>
</form>"""


def confirm_reverse(record: MergeRecord, names: Names, source: pages.AccountSummary,
                    into: pages.AccountSummary, csrf: str) -> str:
    return f"""<h1>Reverse merge {_id(record.id)}?</h1>
<p>On {when(record.merged_at)} {escape(names.person(record.actor))} merged account
{escape(record.from_account)} into {escape(record.into_account)}. Reversing moves back
what the merge moved and still sits where the merge put it (Matrix users, sign-in methods,
profiles, linked accounts, credits); account {escape(record.from_account)} is active
again.</p>
{pages.account_card("merge-from", "Comes back", source)}
{pages.account_card("merge-into", "Gives it back", into)}
<form method="post" action="/admin/unmerge" class="actions">
  {pages.hidden(merge_id=record.id, csrf=csrf)}
  <button type="submit" id="admin-unmerge">Reverse the merge</button>
  <a class="button secondary" id="cancel"
   href="/admin/accounts/{quote(record.into_account, safe="")}">Cancel</a>
</form>"""
