"""The portal's account pages: web sessions (list, sign out one or all), sign-in methods (list,
add another, remove: never the last) and the person's own audit trail (filtered, paged, in
words)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from html import escape
from urllib.parse import urlencode

from aiohttp import web

from .. import words
from ..db.login_identity import LoginIdentity
from ..db.web_session import WebSession, public_id
from .browser import SESSION_COOKIE
from .portal_look import confirm_body, link_button, post_button, select
from .portal_routes import Me, PortalCore, Refused
from .signin_routes import RETURN_COOKIE

SESSIONS = "/account/sessions"
METHODS = "/account/sign-in-methods"
AUDIT = "/account/audit"
AUDIT_PAGE = 25
_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"),
             ("HeadlessChrome/", "Chrome (headless)"), ("Chrome/", "Chrome"),
             ("Safari/", "Safari"), ("curl/", "curl"))
_SYSTEMS = (("Android", "Android"), ("iPhone", "iOS"), ("iPad", "iPadOS"),
            ("Windows", "Windows"), ("Mac OS X", "macOS"), ("CrOS", "ChromeOS"),
            ("Linux", "Linux"))


def browser_name(user_agent: str | None) -> str:
    """A user agent as a person recognises it ("Firefox on Linux"); shown, never trusted."""
    if not user_agent:
        return "Not seen since it signed in"
    name = next((n for marker, n in _BROWSERS if marker in user_agent), "A browser")
    system = next((s for marker, s in _SYSTEMS if marker in user_agent), None)
    return f"{name} on {system}" if system else name


def when(ms: int | None) -> str:
    if not ms:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))


def method_id(identity: LoginIdentity) -> str:
    return hashlib.sha256(f"{identity.issuer}\0{identity.subject}".encode()).hexdigest()[:16]


def _session_rows(sessions: list[WebSession], mine: str, csrf: str) -> str:
    rows = []
    for s in sessions:
        this = s.public_id == mine
        action = ("<strong>This browser</strong>" if this else post_button(
            f"{SESSIONS}/{s.public_id}/sign-out", "Sign out", csrf, kind="secondary",
            element_id=f"end-{s.public_id}"))
        rows.append(
            f'<tr id="session-{s.public_id}"><td data-label="Browser">'
            f"{escape(browser_name(s.user_agent))}</td><td data-label=\"Network\">"
            f'{escape(s.network or "unknown")}</td><td data-label="Last seen">'
            f"{escape(when(s.last_seen or s.created_at))}</td><td data-label=\"Signed in\">"
            f"{escape(when(s.created_at))}</td><td data-label=\"\">{action}</td></tr>")
    return ('<table class="stack" id="sessions"><thead><tr><th scope="col">Browser</th>'
            '<th scope="col">Network</th><th scope="col">Last seen</th><th scope="col">'
            'Signed in</th><th scope="col"><span class="hint">Action</span></th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


class PortalAccount:
    def __init__(self, core: PortalCore) -> None:
        self.core = core

    def register(self, app: web.Application) -> None:
        page, r = self.core.page, app.router
        r.add_get(SESSIONS, page("account", self.sessions))
        r.add_post(SESSIONS + "/sign-out-everywhere", page("account", self.end_all))
        r.add_post(SESSIONS + "/{session}/sign-out", page("account", self.end_one))
        r.add_get(METHODS, page("account", self.methods))
        r.add_get(METHODS + "/add/{provider}", page("account", self.add_method))
        r.add_get(METHODS + "/{method}/remove", page("account", self.ask_remove_method))
        r.add_post(METHODS + "/{method}/remove", page("account", self.remove_method))
        r.add_get(AUDIT, page("account", self.audit))

    # ---- sessions --------------------------------------------------------------------------

    async def sessions(self, request: web.Request, me: Me, _: dict[str, str]) -> web.Response:
        sessions = await self.core.web_sessions.for_account(me.account_id)
        csrf = me.viewer.csrf
        body = f"""<h1>Sessions</h1><p>The browsers signed in to your account. A session lasts
12 hours; signing one out ends it at once, wherever it is.</p>
<div class="card">{_session_rows(sessions, public_id(me.session), csrf)}</div>
<div class="card"><h2>Sign out everywhere</h2><p>Ends every session, this one too.</p>
{post_button(SESSIONS + "/sign-out-everywhere", "Sign out everywhere", csrf, kind="danger",
             element_id="sign-out-everywhere")}</div>"""
        return self.core.render(request, me, "Sessions", body, SESSIONS)

    async def end_one(self, request: web.Request, me: Me, _: dict[str, str]
                      ) -> web.StreamResponse:
        target = request.match_info["session"]
        if not await self.core.web_sessions.end(me.account_id, target):
            raise Refused("You have no such session (it may have ended already).", 404)
        if target == public_id(me.session):
            raise self._signed_out()
        raise self.core.done(SESSIONS, "That session is signed out.")

    async def end_all(self, request: web.Request, me: Me, _: dict[str, str]
                      ) -> web.StreamResponse:
        await self.core.web_sessions.end_all(me.account_id)
        raise self._signed_out()

    def _signed_out(self) -> web.HTTPSeeOther:
        redirect = web.HTTPSeeOther("/auth/sign-in")
        redirect.del_cookie(SESSION_COOKIE, path="/")
        return redirect

    # ---- sign-in methods -------------------------------------------------------------------

    def _provider_name(self, provider_id: str) -> str:
        provider = self.core.signin.providers.get(provider_id)
        return provider.config.name if provider else provider_id

    async def methods(self, request: web.Request, me: Me, _: dict[str, str]) -> web.Response:
        identities = await self.core.storage.identities.for_account(me.account_id)
        users = await self.core.storage.accounts.matrix_users(me.account_id)
        only_one = len(identities) + len(users) <= 1
        rows = []
        for identity in identities:
            mid = method_id(identity)
            email = identity.email or "no email"
            verified = "verified" if identity.email_verified else "unverified"
            action = ('<span class="hint">Your only way to sign in</span>' if only_one
                      else link_button(f"{METHODS}/{mid}/remove", "Remove",
                                       element_id=f"remove-{mid}"))
            rows.append(f'<tr id="method-{mid}"><td data-label="Provider">'
                        f"{escape(self._provider_name(identity.provider_id))}</td>"
                        f'<td data-label="Email">{escape(email)} ({verified})</td>'
                        f'<td data-label="Added">{escape(when(identity.added_at))}</td>'
                        f'<td data-label="">{action}</td></tr>')
        for mxid in users:
            rows.append(f'<tr><td data-label="Provider">Matrix</td><td data-label="Account">'
                        f'<span class="mono">{escape(mxid)}</span></td><td data-label="How">'
                        f"{escape(words.MATRIX_SIGN_IN)}</td><td></td></tr>")
        add = "".join(link_button(f"{METHODS}/add/{pid}", f"Add {p.config.name}",
                                  element_id=f"add-{pid}")
                      for pid, p in self.core.signin.providers.items())
        body = f"""<h1>{words.SIGN_IN_METHODS}</h1><p>The ways you can sign in to this account.
The last one cannot be removed.</p><div class="card"><table class="stack" id="methods"><thead>
<tr><th scope="col">Provider</th><th scope="col">Account</th><th scope="col">Added</th>
<th scope="col"><span class="hint">Action</span></th></tr></thead><tbody>{"".join(rows)}
</tbody></table></div><div class="card"><h2>Add another</h2>
<div class="actions">{add or "<p>No sign-in provider is set up on this bridge.</p>"}</div>
</div>"""
        return self.core.render(request, me, words.SIGN_IN_METHODS, body, METHODS)

    async def add_method(self, request: web.Request, me: Me, _: dict[str, str]
                         ) -> web.StreamResponse:
        provider = request.match_info["provider"]
        if provider not in self.core.signin.providers:
            raise Refused(f"unknown sign-in provider {provider!r}", 404)
        # Back here once the provider answered (signin_routes.after_sign_in).
        redirect = web.HTTPSeeOther(f"/oauth/{provider}/start?purpose=add")
        redirect.set_cookie(RETURN_COOKIE, METHODS, **self.core.binding.cookie_args(600))
        raise redirect

    async def _method(self, me: Me, mid: str) -> LoginIdentity:
        for identity in await self.core.storage.identities.for_account(me.account_id):
            if method_id(identity) == mid:
                return identity
        raise Refused("That sign-in method is not linked to your account.", 404)

    async def ask_remove_method(self, request: web.Request, me: Me, _: dict[str, str]
                                ) -> web.Response:
        identity = await self._method(me, request.match_info["method"])
        name = self._provider_name(identity.provider_id)
        return self.core.render(request, me, "Remove a sign-in method", confirm_body(
            f"Remove {name} ({identity.email or 'no email'})?",
            f"You will no longer be able to sign in with {name}.", request.path,
            "Remove it", me.viewer.csrf, METHODS, danger=True))

    async def remove_method(self, request: web.Request, me: Me, _: dict[str, str]
                            ) -> web.StreamResponse:
        identity = await self._method(me, request.match_info["method"])
        await self.core.accounts.remove_identity(me.account_id, identity.issuer,
                                                 identity.subject, actor=me.actor)
        raise self.core.done(METHODS, f"Removed {self._provider_name(identity.provider_id)} "
                                      "as a way to sign in to your account.")

    # ---- the audit trail -------------------------------------------------------------------

    async def audit(self, request: web.Request, me: Me, _: dict[str, str]) -> web.Response:
        query = request.query
        view = await self.core.accounts.view(me.account_id)
        profiles = {p.profile.id: p.profile.name for p in view.profiles}
        personas = {x.id: x for p in view.profiles for x in p.personas}
        networks = sorted({x.platform for x in personas.values()} | set(
            self.core.linking.networks() if self.core.linking else []))
        kinds = await self.core.trail.kinds(me.account_id)
        profile = query.get("profile", "")
        network = query.get("network", "")
        kind = query.get("kind", "")
        before = query.get("before", "")
        if (profile and profile not in profiles) or (network and network not in networks) or (
                kind and kind not in kinds) or (before and not re.fullmatch(r"\d{1,18}", before)):
            raise Refused("That filter is not one of the choices on the audit page.", 400)
        rows = await self.core.trail.page(
            me.account_id, profile_id=profile or None, network=network or None,
            persona_ids=[i for i, x in personas.items() if x.platform == network],
            kind=kind or None, before=int(before) if before else None, limit=AUDIT_PAGE + 1)
        more = len(rows) > AUDIT_PAGE
        rows = rows[:AUDIT_PAGE]
        items = []
        for row in rows:
            details = words.audit_details(json.loads(row.details))
            persona = personas.get(row.persona or "")
            about = ", ".join(x for x in (
                profiles.get(row.profile or "", ""),
                words.persona_ref(persona.platform, persona.external_user_id) if persona
                else "") if x)
            by = "you" if row.actor in (me.mxid, me.account_id) else row.actor
            stamp = row.ts[:16].replace("T", " ")
            items.append(
                f'<tr id="audit-{row.seq}"><td data-label="When">{escape(stamp)}'
                f'</td><td data-label="What"><strong>{escape(words.audit_kind(row.event_type))}'
                f"</strong>{': ' + escape(details) if details else ''}</td>"
                f'<td data-label="About">{escape(about) or "your account"}</td>'
                f'<td data-label="By">{escape(by)}</td></tr>')
        filters = {"profile": profile, "network": network, "kind": kind}
        kept = {k: v for k, v in filters.items() if v}
        pager = ""
        if before:
            pager += link_button(f"{AUDIT}?{urlencode(kept)}", "Newest", element_id="newest")
        if more:
            pager += link_button(f"{AUDIT}?{urlencode({**kept, 'before': rows[-1].seq})}",
                                 "Older", element_id="older")
        table = ('<table class="stack" id="audit"><thead><tr><th scope="col">When (UTC)</th>'
                 '<th scope="col">What</th><th scope="col">About</th><th scope="col">By</th>'
                 f"</tr></thead><tbody>{''.join(items)}</tbody></table>" if items
                 else "<p>No audit records match.</p>")
        body = f"""<h1>Audit trail</h1><p>Everything done with your account, newest first.</p>
<form method="get" action="{AUDIT}" class="card filters">
{select("Profile", "profile", list(profiles.items()), profile, "audit-profile", "All")}
{select("Network", "network", [(n, n) for n in networks], network, "audit-network", "All")}
{select("Kind", "kind", [(k, words.audit_kind(k)) for k in kinds], kind, "audit-kind", "All")}
<div class="field"><button type="submit" id="audit-filter">Filter</button></div></form>
<div class="card">{table}<div class="pager">{pager}</div></div>"""
        return self.core.render(request, me, "Audit trail", body, AUDIT)

