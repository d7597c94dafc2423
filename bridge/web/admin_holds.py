"""Legal holds on the web: a page of the support dashboard (/admin/holds) and the admin
endpoints of the provisioning API (/_matrix/provision/v1/holds). Both need the level
`bridge.permissions` gives for "holds" (the bot's `admin hold` needs the same); every action
is audited with the admin as the actor (in `bridge.compliance.holds`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from html import escape
from pathlib import Path
from typing import Any

import attrs
from aiohttp import web
from yarl import URL

from ..compliance.holds import HoldError, Holds, describe, iso, parse_time
from ..db import Storage
from ..db.hold import Hold, HoldScope
from ..identity.signin import SignIn
from ..security.anomaly import SessionNetworks
from ..security.permissions import Permissions
from . import pages
from .browser import BrowserBinding
from .network_endpoints import ACTING_USER
from .requests import form_fields, json_object
from .signin_routes import cookie_account, html

log = logging.getLogger("relayforge.web.holds")
PREFIX = "/_matrix/provision/v1"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def hold_json(hold: Hold, messages: int | None = None) -> dict[str, Any]:
    return {"name": hold.name, "scope": hold.scope.value, "network": hold.network,
            "target": hold.target, "from": iso(hold.starts_at), "until": iso(hold.ends_at),
            "reason": hold.reason, "created_by": hold.created_by,
            "created_at": iso(hold.created_at), "released_by": hold.released_by,
            "released_at": iso(hold.released_at), "active": hold.active,
            **({"messages": messages} if messages is not None else {})}


async def create_from(holds: Holds, fields: dict[str, Any], actor: str) -> Hold:
    """A hold from the API's JSON or the page's form (the same names)."""
    def text(name: str) -> str | None:
        value = fields.get(name)
        if value is not None and not isinstance(value, str):
            raise HoldError(f"{name}: must be a string")
        return value or None

    return await holds.create(
        name=text("name") or "", scope=text("scope") or "", target=text("target") or "",
        network=text("network"), reason=text("reason"), actor=actor,
        starts_at=parse_time(text("from"), "from"),
        ends_at=parse_time(text("until"), "until", end=True))


def _error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


class HoldEndpoints:
    """The provisioning API's hold endpoints."""

    def __init__(self, holds: Holds) -> None:
        self.holds = holds

    def register(self, app: web.Application, authed: Callable[[Handler, str], Handler]
                 ) -> None:
        app.router.add_get(f"{PREFIX}/holds", authed(self.list, "holds"))
        app.router.add_post(f"{PREFIX}/holds", authed(self.create, "holds"))
        app.router.add_post(f"{PREFIX}/holds/{{name}}/release", authed(self.release, "holds"))

    async def list(self, request: web.Request) -> web.Response:
        listed = await self.holds.listing(request[ACTING_USER])
        return web.json_response({"holds": [hold_json(h, n) for h, n in listed]})

    async def create(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        try:
            hold = await create_from(self.holds, body, request[ACTING_USER])
        except HoldError as e:
            return _error(400, "M_INVALID_PARAM", str(e))
        return web.json_response(hold_json(hold, 0), status=201)

    async def release(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            await self.holds.get(name)
        except HoldError as e:
            return _error(404, "M_NOT_FOUND", str(e))
        try:
            hold = await self.holds.release(name, request[ACTING_USER])
        except HoldError as e:
            return _error(400, "M_INVALID_PARAM", str(e))
        return web.json_response(hold_json(hold))


@attrs.define
class ExportJob:
    """A dashboard export running or done; kept in memory (a restart ends it: run it again)."""

    hold: str
    directory: str
    total: int
    done: int = 0
    finished: bool = False
    error: str | None = None
    task: asyncio.Task | None = None


class AdminHoldsPage:
    """/admin/holds: list, create, release and export holds (plain forms, each field
    labelled); an export shows its progress."""

    def __init__(self, signin: SignIn, storage: Storage, holds: Holds, binding: BrowserBinding,
                 permissions: Permissions, session_networks: SessionNetworks | None,
                 export_directory: str | None = None) -> None:
        self.signin = signin
        self.storage = storage
        self.holds = holds
        self.binding = binding
        self.permissions = permissions
        self.session_networks = session_networks
        self.export_directory = export_directory
        # The latest export of each hold (one at a time per hold).
        self.jobs: dict[str, ExportJob] = {}

    def register(self, app: web.Application) -> None:
        app.router.add_get("/admin/holds", self.page)
        app.router.add_post("/admin/holds", self.create)
        app.router.add_post("/admin/holds/release", self.release)
        app.router.add_post("/admin/holds/export", self.export)

    async def _admin(self, request: web.Request) -> str:
        account = await cookie_account(self.signin, self.session_networks, request)
        if account is None:
            raise web.HTTPSeeOther("/auth/sign-in")
        mxid, level = self.permissions.best_of(await self.storage.accounts.matrix_users(account))
        refusal = self.permissions.refusal("holds", mxid, level)
        if refusal is None and mxid is not None:
            return mxid
        raise web.HTTPForbidden(text=f"Legal holds are for bridge admins. {refusal or ''}"
                                .strip())

    async def page(self, request: web.Request) -> web.Response:
        admin = await self._admin(request)
        csrf = self.binding.csrf_token(request)
        notice = request.query.get("done", "")
        rows = []
        for hold, count in await self.holds.listing(admin):
            release = "" if not hold.active else (
                '<form method="post" action="/admin/holds/release">'
                f'{pages.hidden(csrf=csrf, name=hold.name)}'
                f'<button type="submit" class="secondary" id="release-{escape(hold.name)}" '
                f'aria-label="Release hold {escape(hold.name)}">Release</button></form>')
            rows.append(f"<tr><td>{escape(hold.name)}</td><td>{escape(hold.scope.value)}</td>"
                        f"<td>{escape(describe(hold).split(': ', 1)[1])}</td><td>{count}</td>"
                        f"<td>{release}{self._export_cell(hold.name, csrf)}</td></tr>")
        running = any(not job.finished for job in self.jobs.values())
        scopes = "".join(f'<option value="{s.value}">{s.value}</option>' for s in HoldScope)
        body = f"""
<h1>Legal holds</h1>
<p><a href="/admin/dashboard">Back to the support dashboard</a></p>
{f'<p class="ok" id="notice" role="status">{escape(notice)}</p>' if notice else ""}
<table id="holds"><caption>Holds</caption>
<thead><tr><th scope="col">Name</th><th scope="col">Scope</th><th scope="col">Covers</th>
<th scope="col">Messages kept</th><th scope="col">Action</th></tr></thead>
<tbody>{"".join(rows) or '<tr><td colspan="5">No holds yet.</td></tr>'}</tbody></table>
<div class="card"><h2>Put a hold in place</h2>
<form method="post" action="/admin/holds" id="create-hold">{pages.hidden(csrf=csrf)}
  <p><label for="hold-name">Name</label>
  <input id="hold-name" name="name" required maxlength="64"></p>
  <p><label for="hold-scope">Scope</label>
  <select id="hold-scope" name="scope">{scopes}</select></p>
  <p><label for="hold-network">Network (for a room or workspace)</label>
  <input id="hold-network" name="network" placeholder="slack, discord, telegram, xmpp"></p>
  <p><label for="hold-target">Custodian, room or workspace</label>
  <input id="hold-target" name="target" required maxlength="255"
   placeholder="account id, @user:server, room id or workspace id"></p>
  <p><label for="hold-from">From (optional)</label>
  <input id="hold-from" name="from" type="date"></p>
  <p><label for="hold-until">Until (optional)</label>
  <input id="hold-until" name="until" type="date"></p>
  <p><label for="hold-reason">Reason</label>
  <input id="hold-reason" name="reason" maxlength="500"></p>
  <button type="submit" id="hold-create">Create hold</button>
</form></div>
<p>Export a hold with
<code>python -m bridge -c config.yaml export --hold NAME --out DIR</code>.</p>"""
        if running:  # no automatic refresh (it would move the page under a screen reader)
            body += ('<p id="export-running" role="status">An export is running: '
                     '<a href="/admin/holds">refresh</a> to see its progress.</p>')
        return html(pages.page("Legal holds", body))

    def _export_cell(self, name: str, csrf: str) -> str:
        job = self.jobs.get(name)
        status = ""
        if job is not None and not job.finished:
            status = (f'<p><label for="progress-{escape(name)}">Exporting {escape(name)}: '
                      f"{job.done} of {job.total} messages</label> "
                      f'<progress id="progress-{escape(name)}" max="{max(job.total, 1)}" '
                      f'value="{job.done}">{job.done}</progress></p>')
            return status
        if job is not None and job.error:
            status = f'<p class="error" role="alert">Export failed: {escape(job.error)}</p>'
        elif job is not None:
            status = (f'<p class="ok" id="exported-{escape(name)}">Exported {job.total} '
                      f"messages to <code>{escape(job.directory)}</code></p>")
        if self.export_directory is None:
            return status
        return (status + '<form method="post" action="/admin/holds/export">'
                f'{pages.hidden(csrf=csrf, name=name)}'
                f'<button type="submit" class="secondary" id="export-{escape(name)}" '
                f'aria-label="Export hold {escape(name)}">Export</button></form>')

    async def export(self, request: web.Request) -> web.Response:
        admin = await self._admin(request)
        form = await form_fields(request)
        self.binding.check_form(request, form)
        name = str(form.get("name", ""))
        if self.export_directory is None or self.holds.exporter is None:
            return html(pages.error_page("Exports from the dashboard need "
                                         "compliance.export_directory in the config; use "
                                         "`python -m bridge export --hold NAME --out DIR`."),
                        status=400)
        try:
            hold = await self.holds.get(name)
        except HoldError as e:
            return html(pages.error_page(str(e)), status=400)
        running = self.jobs.get(name)
        if running is None or running.finished:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            out = Path(self.export_directory) / f"{hold.name}-{stamp}"
            job = ExportJob(hold.name, str(out),
                            await self.holds.held.count_of_hold(hold.id))
            job.task = asyncio.create_task(self._run(job, out, admin))
            self.jobs[name] = job
        raise web.HTTPSeeOther(URL("/admin/holds").with_query(
            done=f"Exporting hold {hold.name}"))

    async def _run(self, job: ExportJob, out: Path, admin: str) -> None:
        def progress(done: int) -> None:
            job.done = done

        assert self.holds.exporter is not None
        try:
            result = await self.holds.exporter(job.hold, out, admin, on_progress=progress)
            job.total = job.done = result["messages"]
        except Exception as e:
            log.exception("The dashboard's export of hold %s failed", job.hold)
            job.error = str(e) or type(e).__name__
        finally:
            job.finished = True

    async def create(self, request: web.Request) -> web.Response:
        admin = await self._admin(request)
        form = await form_fields(request)
        self.binding.check_form(request, form)
        try:
            hold = await create_from(self.holds, form, admin)
        except HoldError as e:
            return html(pages.error_page(str(e)), status=400)
        raise web.HTTPSeeOther(URL("/admin/holds").with_query(done=f"Hold {hold.name} created"))

    async def release(self, request: web.Request) -> web.Response:
        admin = await self._admin(request)
        form = await form_fields(request)
        self.binding.check_form(request, form)
        try:
            hold = await self.holds.release(str(form.get("name", "")), admin)
        except HoldError as e:
            return html(pages.error_page(str(e)), status=400)
        raise web.HTTPSeeOther(URL("/admin/holds").with_query(
            done=f"Hold {hold.name} released"))
