"""`double_puppet.auto`: on a person's first contact, their Matrix account is linked as their
Matrix persona with the appservice-token method, so their own messages from other networks
appear as them from the start. The homeserver proved who is writing (the bot's sender);
whoami as that user is checked before the persona is used, like any `link matrix`."""

from __future__ import annotations

import logging
from typing import Any

from mautrix.types import UserID

from ..core.linking import LinkDone, Linking, LinkRefused
from ..db import Storage
from ..identity.accounts import Accounts
from .bot import ManagementBot

log = logging.getLogger("relayforge.bot.first_contact")

MATRIX = "matrix"
ACTOR = "double_puppet.auto"


class LinkOnFirstContact:
    def __init__(self, bot: ManagementBot, storage: Storage, accounts: Accounts,
                 linking: Linking, connector: Any) -> None:
        self.bot = bot
        self.storage = storage
        self.accounts = accounts
        self.linking = linking
        self.connector = connector

    async def __call__(self, mxid: UserID) -> None:
        if not self.connector.delegates_for(mxid):
            return  # no secret for their server: `link matrix` with a client login instead
        if await self.storage.personas.by_external(MATRIX, mxid) is not None:
            return
        account = await self.accounts.for_matrix_user(mxid)
        profile = (await self.storage.profiles.for_account(account.id))[0].name
        try:
            flow_id, step = await self.linking.start(account.id, MATRIX, None, profile,
                                                     requester=mxid)
            if step.state.get("method") != "appservice":
                return
            # It acts for every profile; the admin turned this on for everyone.
            flow_id, _ = await self._next(account.id, flow_id, {"reach": "all"})
            done = await self.linking.submit(account.id, flow_id, {"consent": "yes"}, ACTOR)
        except LinkRefused as e:
            log.info("Could not link %s as their Matrix persona on first contact: %s", mxid, e)
            return
        assert isinstance(done, LinkDone)
        await self.bot.tell(mxid, (
            f"Your messages from other networks will appear as you ({mxid}), not as a ghost: "
            "the bridge links your Matrix account for that when you first write to it "
            f"(double_puppet.auto). Stop it with: revoke matrix:{mxid}"))

    async def _next(self, account_id: str, flow_id: str, answers: dict[str, str]
                    ) -> tuple[str, Any]:
        result = await self.linking.submit(account_id, flow_id, answers, ACTOR)
        if isinstance(result, LinkDone):
            raise LinkRefused("linked before consent was asked")
        return result
