"""chat.*, reactions.* and files.* (the three-step external upload), plus the plain HTTP
endpoints behind them: the upload URL, url_private downloads, avatars and emoji images."""

from __future__ import annotations

import mimetypes
import secrets
from pathlib import PurePosixPath
from typing import Any

from aiohttp import web

from .models import SlackError, SlackFile, new_id
from .render import file_json, message_json, png
from .state import SlackState
from .web_api import Call, WebApi

SIGN_IN_PAGE = """<!DOCTYPE html><html><head><title>Sign in | Slack</title></head>
<body><h1>Sign in to your workspace</h1><p>Enter your workspace's Slack URL.</p></body></html>
"""


def _content(call: Call) -> tuple[str, Any]:
    text = call.arg("text") or ""
    blocks = call.json_arg("blocks")
    if not text and not blocks and not call.arg("attachments"):
        raise SlackError("no_text")
    return text, blocks


def register(api: WebApi) -> None:
    state = api.state

    @api.method("chat.postMessage", scope="chat:write")
    async def chat_post_message(call: Call) -> dict[str, Any]:
        channel = call.channel()
        text, blocks = _content(call)
        message, _ = state.post_message(call.user, channel, text,
                                        thread_ts=call.arg("thread_ts"),
                                        reply_broadcast=call.flag("reply_broadcast"),
                                        blocks=blocks,
                                        client_msg_id=call.arg("client_msg_id"))
        return {"channel": channel.id, "ts": message.ts,
                "message": message_json(message, channel, state.base_url)}

    @api.method("chat.update", scope="chat:write")
    async def chat_update(call: Call) -> dict[str, Any]:
        channel = call.channel()
        text, blocks = _content(call)
        message, _ = state.edit_message(call.user, channel, call.arg("ts"), text, blocks)
        return {"channel": channel.id, "ts": message.ts, "text": message.text,
                "message": message_json(message, channel, state.base_url)}

    @api.method("chat.delete", scope="chat:write")
    async def chat_delete(call: Call) -> dict[str, Any]:
        channel = call.channel()
        ts = call.arg("ts")
        state.delete_message(call.user, channel, ts)
        return {"channel": channel.id, "ts": ts}

    async def react(call: Call, add: bool) -> dict[str, Any]:
        channel = call.channel()
        state.react(call.user, channel, call.arg("timestamp"), call.arg("name") or "", add=add)
        return {}

    @api.method("reactions.add", scope="reactions:write")
    async def reactions_add(call: Call) -> dict[str, Any]:
        return await react(call, add=True)

    @api.method("reactions.remove", scope="reactions:write")
    async def reactions_remove(call: Call) -> dict[str, Any]:
        return await react(call, add=False)

    @api.method("files.getUploadURLExternal", scope="files:write")
    async def get_upload_url(call: Call) -> dict[str, Any]:
        name = call.require("filename")
        length = call.number("length", -1)
        if length < 0:
            raise SlackError("invalid_arguments")
        file = new_file(state, call.user, name, length)
        return {"upload_url": f"{state.base_url}/upload/v1/{file.upload_ticket}",
                "file_id": file.id}

    @api.method("files.completeUploadExternal", scope="files:write")
    async def complete_upload(call: Call) -> dict[str, Any]:
        entries = call.json_arg("files")
        if not isinstance(entries, list) or not entries:
            raise SlackError("invalid_arguments")
        files: list[SlackFile] = []
        for entry in entries:
            file = state.files.get(str(entry.get("id", "")))
            # Only the uploader can complete, and only once the bytes have arrived.
            if file is None or file.user is not call.user or not file.uploaded:
                raise SlackError("file_not_found")
            if entry.get("title"):
                file.title = str(entry["title"])
            files.append(file)
        targets = [c for c in (call.arg("channels") or "").split(",") if c]
        if call.arg("channel_id"):
            targets.insert(0, call.require("channel_id"))
        channels = [state.channel_for(call.user, c) for c in targets]
        for channel in channels:
            state.post_message(call.user, channel, call.arg("initial_comment") or "",
                               thread_ts=call.arg("thread_ts"), files=files)
        return {"files": [{"id": f.id, "title": f.title} for f in files]}

    @api.method("files.info", scope="files:read")
    async def files_info(call: Call) -> dict[str, Any]:
        file = state.file_for(call.user, call.arg("file"))
        return {"file": file_json(file, state.base_url), "comments": [],
                "response_metadata": {"next_cursor": ""}}


def new_file(state: SlackState, user: Any, name: str, length: int) -> SlackFile:
    suffix = PurePosixPath(name).suffix.lower()
    file = SlackFile(id=new_id("F"), user=user, team=user.team, name=name, title=name,
                     length=length, created=int(state.now()),
                     mimetype=mimetypes.guess_type(name)[0] or "application/octet-stream",
                     filetype=suffix.lstrip(".") or "binary",
                     upload_ticket=secrets.token_urlsafe(24))
    state.files[file.id] = file
    return file


def add_routes(app: web.Application, state: SlackState) -> None:
    async def upload(request: web.Request) -> web.Response:
        ticket = request.match_info["ticket"]
        file = next((f for f in state.files.values() if f.upload_ticket == ticket), None)
        if file is None or file.uploaded:
            return web.Response(status=404, text="upload not found", content_type="text/plain")
        if request.content_type == "multipart/form-data":
            data = b""
            reader = await request.multipart()
            async for part in reader:
                if getattr(part, "filename", None) or getattr(part, "name", "") == "file":
                    data = await part.read()  # type: ignore[union-attr]
                    break
        else:
            data = await request.read()
        file.data = data
        file.length = len(data)
        # Slack's upload host answers in plain text.
        return web.Response(text=f"OK - {len(data)}", content_type="text/plain")

    async def private_file(request: web.Request) -> web.StreamResponse:
        team_id, _, file_id = request.match_info["key"].partition("-")
        file = state.files.get(file_id)
        header = request.headers.get("Authorization", "")
        viewer = None
        if header.startswith("Bearer "):
            try:
                viewer = state.check_token(header[7:].strip()).user
            except SlackError:
                viewer = None
        if (file is None or file.team.id != team_id or viewer is None
                or not state.can_see_file(viewer, file) or file.data is None):
            # Like Slack: no error status, a redirect to an HTML sign-in page.
            raise web.HTTPFound(f"{state.base_url}/?redir={request.path}")
        if file.moved_to:
            raise web.HTTPFound(file.moved_to)
        headers = {}
        if request.match_info["tail"].startswith("download/"):
            headers["Content-Disposition"] = f'attachment; filename="{file.name}"'
        return web.Response(body=file.data, content_type=file.mimetype, headers=headers)

    async def avatar(request: web.Request) -> web.Response:
        owner = request.match_info["owner"]
        user = state.users.get(owner)
        if user is not None:
            return web.Response(body=user.avatar, content_type="image/png")
        if owner in state.teams:
            return web.Response(body=png(4, 4, (74, 21, 75)), content_type="image/png")
        raise web.HTTPNotFound()

    async def emoji(request: web.Request) -> web.Response:
        team = state.teams.get(request.match_info["team"])
        image = team.emoji_images.get(request.match_info["name"]) if team else None
        if image is None:
            raise web.HTTPNotFound()
        return web.Response(body=image, content_type="image/png")

    async def sign_in(request: web.Request) -> web.Response:
        return web.Response(text=SIGN_IN_PAGE, content_type="text/html")

    app.router.add_post("/upload/v1/{ticket}", upload)
    app.router.add_get("/files-pri/{key}/{tail:.+}", private_file)
    app.router.add_get("/avatars/{owner}/{size}.png", avatar)
    app.router.add_get("/emoji/{team}/{name}.png", emoji)
    app.router.add_get("/", sign_in)
