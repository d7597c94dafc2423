"""The account portal: what a person does from the browser, through the same code as the bot's
commands (identity.accounts, core.linking, core.mapping, security.capabilities), with the
same words (bridge/words.py) and the same permission levels (security.permissions).

This module holds what every portal page shares: who is signed in (and at what level), the
CSRF check of every form, the one-time notice after an action, the styled refusals, and the
home page with the profiles and their linked accounts. The other areas are in
portal_link.py, portal_rules.py and portal_account.py.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from html import escape
from urllib.parse import quote, unquote

import attrs
from aiohttp import web

from .. import words
from ..core.linking import Linking
from ..core.mapping import MappingRules
from ..db import Storage
from ..db.audit_trail import AuditTrailStore
from ..db.persona import Persona, PersonaStatus
from ..db.profile import Profile
from ..db.web_session import WebSessionStore
from ..identity.accounts import Accounts, AccountView
from ..identity.errors import IdentityError
from ..identity.signin import SESSION_TTL, SignIn
from ..security.anomaly import SessionNetworks
from ..security.capabilities import Capabilities
from ..security.permissions import Level, Permissions
from .browser import SESSION_COOKIE, BrowserBinding
from .portal_look import Viewer, confirm_body, error_page, field, layout, link_button
from .requests import form_fields
from .signin_routes import RETURN_COOKIE, cookie_account

HOME = "/account"
FLASH_COOKIE = "rf_notice"
_FLASH_MAX = 600


class Refused(Exception):
    """A portal request that cannot be done: the status and the words the bot uses."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


NOT_YOURS_PROFILE = Refused("You have no such profile. See your profiles on the home page.", 404)
NOT_YOURS_PERSONA = Refused('You have no such linked account. See "Linked accounts" on the '
                            "home page.", 404)


@attrs.frozen
class Me:
    """The person behind a portal request."""
    account_id: str
    mxid: str | None
    level: Level
    viewer: Viewer
    session: str

    @property
    def actor(self) -> str:
        # Audit records name the Matrix user when there is one, as the bot's do.
        return self.mxid or self.account_id


Relink = Callable[[web.Request, "Me", Persona, Profile], Awaitable[web.StreamResponse]]
Page = Callable[[web.Request, Me, dict[str, str]], Awaitable[web.StreamResponse]]


def html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


class PortalCore:
    """The shared pieces every portal area uses."""

    def __init__(self, signin: SignIn, accounts: Accounts, storage: Storage,
                 binding: BrowserBinding, permissions: Permissions,
                 session_networks: SessionNetworks | None) -> None:
        self.signin = signin
        self.accounts = accounts
        self.storage = storage
        self.binding = binding
        self.permissions = permissions
        self.session_networks = session_networks
        self.web_sessions = WebSessionStore(storage.db)
        self.trail = AuditTrailStore(storage.db)
        # Set once the bridge's Matrix side is up (the routes exist before it).
        self.linking: Linking | None = None
        self.rules: MappingRules | None = None
        self.capabilities: Capabilities | None = None
        # The link pages' answer to "relink" (portal_link.py).
        self.relink: Relink | None = None

    # ---- who is asking ---------------------------------------------------------------------

    async def me(self, request: web.Request, action: str) -> Me:
        session = request.cookies.get(SESSION_COOKIE, "")
        account = await cookie_account(self.signin, self.session_networks, request)
        if account is None:
            if request.method == "GET":
                redirect = web.HTTPSeeOther("/auth/sign-in")
                redirect.set_cookie(RETURN_COOKIE, request.path_qs,
                                    **self.binding.cookie_args(600))
                raise redirect
            raise Refused("Your session ended: sign in again.", 401)
        users = await self.storage.accounts.matrix_users(account)
        mxid, level = self.permissions.best_of(users)
        viewer = Viewer(account, mxid, self.binding.csrf_token(request))
        refusal = self.permissions.refusal(action, mxid, level)
        if refusal is not None:
            raise Refused(refusal, 403)
        await self._seen(request, session, account)
        return Me(account, mxid, level, viewer, session)

    async def _seen(self, request: web.Request, session: str, account: str) -> None:
        network = None
        if self.session_networks is not None:
            address = self.session_networks.client_address(request)
            if address:
                try:
                    network = self.session_networks.network_of(address)
                except ValueError:
                    network = None
        record = await self.storage.one_time.peek("web_session", session)
        expires = (record.expires_at if record is not None
                   else int(time.time() * 1000) + SESSION_TTL * 1000)
        await self.web_sessions.touch(session, account, request.headers.get("User-Agent", ""),
                                      network, expires)

    def page(self, action: str, handler: Page) -> Callable[[web.Request],
                                                           Awaitable[web.StreamResponse]]:
        """A portal route: signed in, at the level `action` needs (the bot's), a POST with
        this browser's form token; refusals are the styled page in the bot's words."""
        async def run(request: web.Request) -> web.StreamResponse:
            viewer = None
            try:
                me = await self.me(request, action)
                viewer = me.viewer
                form: dict[str, str] = {}
                if request.method == "POST":
                    form = await form_fields(request)
                    self.binding.check_form(request, form)
                return await handler(request, me, form)
            except Refused as e:
                return html(error_page(str(e), e.status, viewer=viewer), e.status)
            except IdentityError as e:
                return html(error_page(str(e), 400, viewer=viewer), 400)

        return run

    def ready(self) -> tuple[Linking, MappingRules]:
        if self.linking is None or self.rules is None:
            raise Refused("The bridge is starting; try again in a minute.", 503)
        return self.linking, self.rules

    # ---- after an action: a notice on the next page ----------------------------------------

    def done(self, where: str, notice: str) -> web.HTTPSeeOther:
        """Back to a page (a GET: reloading it does nothing again), with the bot's words."""
        redirect = web.HTTPSeeOther(where)
        redirect.set_cookie(FLASH_COOKIE, quote(notice[:_FLASH_MAX]),
                            **self.binding.cookie_args(60))
        return redirect

    def render(self, request: web.Request, me: Me, title: str, body: str, current: str = "",
               problem: str | None = None, status: int = 200) -> web.Response:
        raw = request.cookies.get(FLASH_COOKIE)
        response = html(layout(title, body, me.viewer, current,
                               unquote(raw) if raw else None, problem), status)
        if raw:
            response.del_cookie(FLASH_COOKIE, path="/")
        return response

    # ---- the person's own things (another person's ids are simply not found) ---------------

    async def profile_of(self, me: Me, profile_id: str) -> Profile:
        for profile in await self.storage.profiles.for_account(me.account_id):
            if profile.id == profile_id:
                return profile
        raise NOT_YOURS_PROFILE

    async def persona_of(self, me: Me, persona_id: str) -> tuple[Persona, Profile]:
        view = await self.accounts.view(me.account_id)
        for profile_view in view.profiles:
            for persona in profile_view.personas:
                if persona.id == persona_id:
                    return persona, profile_view.profile
        raise NOT_YOURS_PERSONA


# What a person can do with a linked account in each status.
_ACTIONS_BY_STATUS = {
    PersonaStatus.ACTIVE: ("pause", "revoke", "unlink"),
    PersonaStatus.PAUSED: ("resume", "revoke", "unlink"),
    PersonaStatus.READ_ONLY: ("relink", "revoke", "unlink"),
    PersonaStatus.NEEDS_REAUTH: ("relink", "revoke", "unlink"),
    PersonaStatus.REVOKED: ("relink", "unlink"),
}
_ACTION_LABELS = {"pause": "Pause", "resume": "Resume", "revoke": "Revoke",
                  "unlink": "Unlink", "relink": "Relink"}
PERSONA_ACTIONS = tuple(_ACTION_LABELS)


def _persona_rows(personas: list[Persona]) -> str:
    if not personas:
        return f"<p>{escape(words.NO_LINKED_ACCOUNTS.capitalize())}.</p>"
    rows = []
    for persona in sorted(personas, key=lambda p: (p.platform, p.external_user_id)):
        status = persona.status.value
        actions = "".join(link_button(
            f"/account/personas/{persona.id}/{action}", _ACTION_LABELS[action],
            kind="secondary", element_id=f"{action}-{persona.id}")
            for action in _ACTIONS_BY_STATUS[persona.status])
        name = persona.display_name or persona.external_user_id
        checked = (f'<br><small>credentials checked {escape(str(persona.last_refresh))}'
                   "</small>" if persona.last_refresh else "")
        rows.append(
            f'<tr id="persona-{persona.id}"><td data-label="Network">{escape(persona.platform)}'
            f'</td><td data-label="Account"><span class="mono">'
            f"{escape(persona.external_user_id)}</span> ({escape(name)}){checked}</td>"
            f'<td data-label="Status"><span class="status status-{status}" '
            f'id="status-{persona.id}">{escape(words.status_words(status))}</span></td>'
            f'<td data-label="Actions"><div class="actions">{actions}</div></td></tr>')
    return ('<table class="stack"><thead><tr><th scope="col">Network</th>'
            '<th scope="col">Account</th><th scope="col">Status</th>'
            f'<th scope="col">Actions</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def home_body(view: AccountView, csrf: str) -> str:
    cards = []
    for profile_view in view.profiles:
        profile = profile_view.profile
        space = (f'Space <span class="mono">{escape(profile.space_mxid)}</span>'
                 if profile.space_mxid else "No space yet")
        cards.append(f"""<section class="card" id="profile-{profile.id}"
 aria-labelledby="profile-name-{profile.id}">
<h2 id="profile-name-{profile.id}">{escape(profile.name)}</h2><p class="hint">{space}</p>
<h3>{words.LINKED_ACCOUNTS}</h3>{_persona_rows(profile_view.personas)}
<div class="actions">{link_button(f"/account/link?profile={profile.id}",
                                  f"Link a network to {profile.name}", kind="",
                                  element_id=f"link-{profile.id}")}
{link_button(f"/account/rules#rules-{profile.id}", words.MAPPING_RULES)}</div>
<details><summary>Rename or delete {escape(profile.name)}</summary>
<form method="post" action="/account/profiles/{profile.id}/rename">
<input type="hidden" name="csrf" value="{escape(csrf)}">
{field("New name", "name", value=profile.name, element_id=f"rename-{profile.id}")}
<button type="submit" class="secondary">Rename</button></form>
{link_button(f"/account/profiles/{profile.id}/delete", "Delete this profile", kind="danger",
             element_id=f"delete-{profile.id}")}</details></section>""")
    return f"""<h1>Your account</h1>
<p>Your profiles (each with its Matrix space) and the accounts linked to them. Every change
takes effect at once, as the bot's commands do.</p>{"".join(cards)}
<section class="card" aria-labelledby="new-profile"><h2 id="new-profile">New profile</h2>
<form method="post" action="/account/profiles"><input type="hidden" name="csrf"
 value="{escape(csrf)}">{field("Profile name", "name", hint="For example Jobb or Privat.")}
<button type="submit" id="create-profile">Create profile</button></form></section>"""


class PortalHome:
    """`/`, the home page, profiles and the actions on linked accounts."""

    def __init__(self, core: PortalCore) -> None:
        self.core = core

    def register(self, app: web.Application) -> None:
        page, r = self.core.page, app.router
        r.add_get("/", self.root)
        r.add_get(HOME, page("account", self.home))
        r.add_post("/account/profiles", page("profiles", self.create_profile))
        r.add_post("/account/profiles/{profile_id}/rename", page("profiles", self.rename))
        r.add_get("/account/profiles/{profile_id}/delete", page("profiles", self.ask_delete))
        r.add_post("/account/profiles/{profile_id}/delete", page("profiles", self.delete))
        r.add_get("/account/personas/{persona_id}/{action}", page("personas", self.ask))
        r.add_post("/account/personas/{persona_id}/{action}", page("personas", self.act))

    async def root(self, request: web.Request) -> web.StreamResponse:
        """The portal when signed in, the sign-in page otherwise."""
        account = await cookie_account(self.core.signin, self.core.session_networks, request)
        raise web.HTTPSeeOther(HOME if account else "/auth/sign-in")

    async def home(self, request: web.Request, me: Me, _: dict[str, str]) -> web.Response:
        view = await self.core.accounts.view(me.account_id)
        return self.core.render(request, me, "Your account", home_body(view, me.viewer.csrf),
                                HOME)

    async def create_profile(self, request: web.Request, me: Me, form: dict[str, str]
                             ) -> web.StreamResponse:
        created = await self.core.accounts.create_profile(me.account_id, form.get("name", ""),
                                                          actor=me.actor)
        raise self.core.done(HOME, words.profile_created(created.name))

    async def rename(self, request: web.Request, me: Me, form: dict[str, str]
                     ) -> web.StreamResponse:
        profile = await self.core.profile_of(me, request.match_info["profile_id"])
        new = form.get("name", "").strip()
        await self.core.accounts.rename_profile(me.account_id, profile.name, new,
                                                actor=me.actor)
        raise self.core.done(HOME, words.profile_renamed(profile.name, new))

    async def ask_delete(self, request: web.Request, me: Me, _: dict[str, str]
                         ) -> web.Response:
        profile = await self.core.profile_of(me, request.match_info["profile_id"])
        return self.core.render(request, me, "Delete a profile", confirm_body(
            f'Delete the profile "{profile.name}"?',
            "Its space stays in Matrix; the profile and its settings are gone. A profile with "
            "linked accounts cannot be deleted: unlink them first.",
            request.path, "Delete the profile", me.viewer.csrf, HOME, danger=True))

    async def delete(self, request: web.Request, me: Me, _: dict[str, str]
                     ) -> web.StreamResponse:
        profile = await self.core.profile_of(me, request.match_info["profile_id"])
        await self.core.accounts.delete_profile(me.account_id, profile.name, actor=me.actor)
        raise self.core.done(HOME, words.profile_deleted(profile.name))

    def _action(self, request: web.Request) -> str:
        action = request.match_info["action"]
        if action not in PERSONA_ACTIONS:
            raise Refused(f'"{action}" is not something one can do with a linked account '
                          f"({', '.join(PERSONA_ACTIONS)}).", 404)
        return action

    async def ask(self, request: web.Request, me: Me, _: dict[str, str]) -> web.Response:
        action = self._action(request)
        persona, profile = await self.core.persona_of(me, request.match_info["persona_id"])
        ref = words.persona_ref(persona.platform, persona.external_user_id)
        label = _ACTION_LABELS[action]
        return self.core.render(request, me, f"{label} {ref}", confirm_body(
            f"{label} {ref}?",
            f"{words.PERSONA_ACTIONS[action]}. Profile {profile.name}; now "
            f"{words.status_words(persona.status.value)}.",
            request.path, label, me.viewer.csrf, HOME,
            danger=action in ("revoke", "unlink")))

    async def act(self, request: web.Request, me: Me, _: dict[str, str]
                  ) -> web.StreamResponse:
        action = self._action(request)
        persona, profile = await self.core.persona_of(me, request.match_info["persona_id"])
        if action == "relink":
            # The same flow as linking from scratch, for the same account and profile.
            assert self.core.relink is not None
            return await self.core.relink(request, me, persona, profile)
        if action == "unlink":
            await self.core.accounts.unlink_persona(me.account_id, persona.id, actor=me.actor)
            raise self.core.done(HOME, words.unlinked(persona.platform,
                                                      persona.external_user_id))
        changed = await self.core.accounts.set_persona_state(me.account_id, persona.id, action,
                                                             actor=me.actor)
        raise self.core.done(HOME, words.persona_now(changed.platform, changed.external_user_id,
                                                     changed.status.value))

