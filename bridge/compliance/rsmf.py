"""An RSMF 2.0 manifest (Relativity Short Message Format, `rsmf_manifest.json`) of an export:
participants, one conversation per room, one message event per held message with its edits
(previous -> new), deletion, reactions, attachments and thread parent."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from .holds import iso

RSMF_VERSION = "2.0.0"


def _custom(**values: Any) -> list[dict[str, str]]:
    # RSMF's custom properties are name/value strings, neither empty.
    return [{"name": k, "value": str(v)} for k, v in values.items() if v not in (None, "")]


def rsmf_manifest(messages: list[dict[str, Any]], rooms: list[dict[str, Any]],
                  custodian_ids: set[str]) -> dict[str, Any]:
    """`messages` are the export's message summaries (see export.py), oldest first."""
    participants: dict[str, dict[str, Any]] = {}

    def participant(sender: dict[str, Any]) -> str:
        pid = sender.get("matrix_user") or f"{sender['network']}:{sender.get('remote_id')}"
        if pid not in participants:
            entry: dict[str, Any] = {"id": pid, "display": sender.get("name") or pid}
            if sender.get("remote_id"):
                entry["account_id"] = sender["remote_id"]
            entry["custom"] = _custom(network=sender.get("network"),
                                      matrix_user=sender.get("matrix_user"))
            participants[pid] = entry
        return pid

    conversations: dict[str, dict[str, Any]] = {}
    for room in rooms:
        cid = f"{room['network']}:{room['remote_room']}"
        conversations[cid] = {"id": cid, "display": room.get("name") or room["remote_room"],
                              "platform": room["network"], "type": "channel",
                              "participants": [],
                              "custom": _custom(matrix_room=room.get("room_mxid"),
                                                workspace=room.get("workspace"))}
    events = []
    for message in messages:
        cid = f"{message['network']}:{message['remote_room']}"
        pid = participant(message["sender"])
        if pid not in conversations[cid]["participants"]:
            conversations[cid]["participants"].append(pid)
        versions = message["versions"]
        edits = [{"participant": pid, "timestamp": v["timestamp"], "previous": p["text"] or "",
                  "new": v["text"] or ""} for p, v in pairwise(versions)]
        event: dict[str, Any] = {
            "id": message["id"], "type": "message", "participant": pid, "conversation": cid,
            "timestamp": versions[0]["timestamp"], "body": versions[-1]["text"] or "",
            "deleted": message["deletion"] is not None, "edits": edits,
            "direction": "outgoing" if pid in custodian_ids else "incoming",
            "custom": _custom(network_ids=", ".join(f"{k}={v}" for k, v in
                                                    message["network_ids"].items() if v),
                              matrix_event=message["matrix_event_id"],
                              deleted_at=(message["deletion"] or {}).get("at"),
                              deleted_by=(message["deletion"] or {}).get("by"),
                              deleted_side=(message["deletion"] or {}).get("side")),
        }
        parent = message.get("thread_root_id") or message.get("reply_to_id")
        if parent:
            event["parent"] = parent
        reactions: dict[str, dict[str, Any]] = {}
        for reaction in message["reactions"]:
            if reaction["removed"] is not None:
                continue
            entry = reactions.setdefault(reaction["key"], {"value": reaction["key"],
                                                           "count": 0, "participants": []})
            entry["count"] += 1
            who = participant(reaction["sender"])
            if who not in entry["participants"]:
                entry["participants"].append(who)
        if reactions:
            event["reactions"] = list(reactions.values())
        attachments = [{"id": a["file"], "display": a["name"], "size": a["size"]}
                       for v in versions for a in ([v["attachment"]] if v["attachment"] else [])]
        if attachments:
            event["attachments"] = attachments
        events.append(event)
    for conversation in conversations.values():
        custodian = next((p for p in conversation["participants"] if p in custodian_ids), None)
        if custodian:
            conversation["custodian"] = custodian
        if not conversation["custom"]:
            del conversation["custom"]
    for entry in participants.values():
        if not entry["custom"]:
            del entry["custom"]
    return {"version": RSMF_VERSION, "participants": list(participants.values()),
            "conversations": list(conversations.values()), "events": events}


__all__ = ["RSMF_VERSION", "iso", "rsmf_manifest"]
