"""Hooking a worker (bridge/core/workers.py) into the rest of the bridge when several share
one database: who sends which room, who has which session, the caches kept in step across
workers, and the work handed to the worker that can do it."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol

from mautrix.types import RoomID

from .worker_calls import CallSeal
from .workers import Workers

if TYPE_CHECKING:
    from .delivery import Delivery
    from .linking import Linking
    from .mapping import MappingRules
    from .sessions import PersonaSessions


class _Portals(Protocol):
    on_forget: list[Callable[[str, str], None]]
    exclusive: Callable[[str], AbstractAsyncContextManager[None]]

    def drop_cached(self, network: str, remote_id: str) -> None: ...


class _RoomState(Protocol):
    on_write: list[Callable[[RoomID], None]]

    def drop_room(self, room_id: RoomID) -> None: ...


class _Vault(Protocol):
    def forget_cached_key(self, profile: str) -> None: ...

    async def open_or_create(self, profile: str, persona: str, field: str,
                             make: Callable[[], bytes]) -> bytes: ...


def wire_workers(workers: Workers, delivery: Delivery, sessions: PersonaSessions,
                 rules: MappingRules, portals: _Portals, room_state: _RoomState,
                 vault: _Vault, linking: Linking | None = None) -> None:
    """Hook this worker into the rest of the bridge, when it shares the database: who sends
    which room, who has which session, the caches the workers keep in step, and the work
    handed to the worker that can do it."""
    if not workers.shared:
        return
    delivery.gate = workers
    sessions.gate = workers
    from ..security.system_keys import SYSTEM_PERSONA, SYSTEM_PROFILE
    from .linking import ELSEWHERE_SECONDS as LINK_SECONDS
    from .mapping import ELSEWHERE_SECONDS as RULE_SECONDS

    workers.seal = CallSeal(lambda: vault.open_or_create(
        SYSTEM_PROFILE, SYSTEM_PERSONA, "worker_call_key", lambda: secrets.token_bytes(32)))
    # A rule's room is joined on the worker serving its network; only that one judges it.
    rules.serves = workers.serves
    rules.elsewhere = lambda network, what, args: workers.run_where_served(
        network, what, args, limit=RULE_SECONDS)
    workers.handlers["rules.add"] = rules.add_here
    if linking is not None:  # a login held in one worker's memory is finished there
        linking.worker_id = workers.worker_id
        linking.call_worker = lambda worker, what, args: workers.call(
            worker, what, args, limit=LINK_SECONDS)
        workers.handlers["link.submit"] = linking.submit_here

    async def open_here(persona_id: str) -> None:
        """A session taken over (or linked on another worker): open it, and rejoin its
        mapped rooms with it."""
        persona = await sessions.storage.personas.get(persona_id)
        if persona is None:
            return
        async with workers.preparing(persona.platform):
            if await sessions.open(persona, unless_open=True):
                await rules.activate_all(persona)

    async def follow_here(persona_id: str) -> None:
        """The persona changed on another worker: opening a session again starts a fresh
        connection, which has joined nothing yet, so its mapped rooms are joined again."""
        persona = await sessions.storage.personas.get(persona_id)
        if persona is None:
            return
        async with workers.preparing(persona.platform):
            await sessions.follow_id(persona_id)
            if persona_id in sessions.opened:
                await rules.activate_all(persona)

    workers.send_room = delivery.kick
    workers.open_persona = open_here
    workers.follow_persona = follow_here
    workers.close_persona = sessions.close_id
    workers.personas_wanted = sessions.wanted
    workers.persona_networks = {network for network, connector in sessions.connectors.items()
                                if connector.requires_authorization}
    # The portal cache: a portal renamed, claimed or mapped here is read afresh there.
    portals.on_forget.append(
        lambda network, remote_id: workers.forget("portal", json.dumps([network, remote_id])))
    workers.caches["portal"] = lambda key: portals.drop_cached(*json.loads(key))
    # Two workers seeing the first message of one remote room make one portal.
    portals.exclusive = workers.leases.exclusive
    # Matrix room state (members, power levels): each worker sees its own transactions.
    room_state.on_write.append(lambda room: workers.forget("room_state", room))
    workers.caches["room_state"] = lambda room: room_state.drop_room(RoomID(room))
    # Vault data keys: a key rotated or shredded here must not live on there.
    drop_key = vault.forget_cached_key

    def forget_key(profile: str) -> None:
        drop_key(profile)
        workers.forget("vault", profile)

    vault.forget_cached_key = forget_key  # type: ignore[method-assign]
    workers.caches["vault"] = drop_key
