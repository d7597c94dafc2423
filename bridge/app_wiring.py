"""How the bridge's parts are connected once storage and the listener exist, in the order
`Bridge.start` calls them: the Matrix side (ghosts, portals, spaces, the router, the bot), then
the people's side (the outbound queue, sessions, linking, mapping rules, backfill), then every
bot command with the wiring that goes with it. Each step sets its parts on the bridge."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixError, MatrixRequestError, MNotFound
from mautrix.types import UserID

from .bot.account_commands import register_account_commands
from .bot.agent_commands import register_agent_commands
from .bot.audit_commands import register_audit_commands
from .bot.bot import ManagementBot
from .bot.builtin_commands import register_builtin_commands
from .bot.dispatch import MatrixDispatcher
from .bot.first_contact import LinkOnFirstContact
from .bot.hold_commands import register_hold_commands
from .bot.network_commands import NetworkCommands
from .bot.permissions import Permissions
from .bot.privacy_commands import PrivacyCommands
from .bot.security_commands import SecurityCommands
from .compliance.archive import HoldArchive
from .compliance.export import BundleWriter
from .compliance.forget import Forgetting
from .compliance.my_data import PersonalData
from .compliance.residency import Residency
from .compliance.retention import Retention
from .core.authority import Authority
from .core.avatars import public_media_base
from .core.backfill import Backfill, BackfillSettings
from .core.delivery import Delivery, DeliverySettings
from .core.direct_history import DirectHistory
from .core.linking import Linking
from .core.mapping import MappingRules
from .core.router import Router
from .core.sessions import PersonaSessions
from .core.worker_wiring import wire_workers
from .db.persona import Persona, PersonaStatus
from .matrix.double_puppet import MATRIX, DoublePuppets
from .matrix.ghosts import Ghosts, GhostTemplate
from .matrix.portals import Portals
from .matrix.spaces import MatrixSpaces, PortalSpaces
from .security.capabilities import Capabilities
from .security.policy import Policy
from .web.link_routes import callback_path, start_path

if TYPE_CHECKING:
    from .app_parts import BridgeParts as Bridge

log = logging.getLogger("relayforge")


async def homeserver_has_user(intent: IntentAPI, mxid: str) -> bool | None:
    """Whether a user of our own homeserver exists (its profile is found); None when the
    homeserver did not say."""
    try:
        await intent.get_profile(UserID(mxid))
    except MNotFound:
        return False
    except MatrixRequestError as e:
        # Synapse answers an unknown local user's profile with 404 M_UNKNOWN, too.
        if e.http_status == 404:
            return False
        log.warning("Could not look up %s on the homeserver: %s", mxid, e)
        return None
    except MatrixError as e:
        log.warning("Could not look up %s on the homeserver: %s", mxid, e)
        return None
    return True


# ---- the Matrix side -----------------------------------------------------------------------

def build_matrix_side(bridge: Bridge, bot_intent: IntentAPI
                      ) -> tuple[Ghosts, Portals, MatrixSpaces]:
    """Ghosts, portals and spaces; the router with who may act as whom; the bot."""
    cfg = bridge.config
    assert bridge.storage and bridge.security and bridge.accounts and bridge.web
    templates = {
        network: GhostTemplate(
            network,
            cfg[f"networks.{network}.username_template"],
            cfg[f"networks.{network}.displayname_template"],
            cfg["homeserver.domain"],
        )
        # A Matrix persona is a real Matrix user: it has no ghosts.
        for network in cfg.network_names if network != MATRIX
    }
    ghosts = Ghosts(bot_intent, bridge.storage.puppets, templates)
    portals = Portals(bot_intent, bridge.storage.portals, cfg["bridge.portal_cache_size"])
    bridge.storage.state_store.max_rooms = cfg["bridge.room_state_cache_size"]
    bridge.policy = Policy(cfg.get("policy"), cfg.networks)
    bridge.capabilities = Capabilities(bridge.storage, bridge.security.audit, bridge.policy,
                                       bridge._workspace_of, lambda: sorted(bridge.connectors))
    bridge.router = Router(bridge.storage, portals, ghosts, bridge.connectors, bridge.metrics,
                           authority=Authority(bridge.storage, bridge.security.minter,
                                               bridge.policy, bridge.capabilities),
                           public_media=public_media_base(cfg["homeserver.address"],
                                                          cfg.get("homeserver.public_url")))
    # Legal holds keep what they cover, at the router's one capture point.
    bridge.router.archive = HoldArchive(bridge.storage, bridge.web.holds, bridge.security.vault,
                                        bridge.security.audit, bridge._workspace_of)
    bridge.web.holds.exporter = BundleWriter(bridge.storage, bridge.web.holds,
                                             bridge.router.archive, bridge.security.vault,
                                             bridge.security.audit).write
    bridge.bot = ManagementBot(
        bot_intent, bridge.storage.management_rooms,
        Permissions(cfg["bridge.permissions"]), cfg["bridge.command_prefix"],
        is_bridge_user=lambda mxid: mxid == bot_intent.mxid or ghosts.is_ghost(mxid),
    )
    # The web routes exist before the bot does; give them the Matrix side now.
    spaces = bridge.spaces = MatrixSpaces(bot_intent, bridge.storage)
    bridge.accounts.spaces = spaces
    bridge.bot.after_message.append(spaces.answered)  # a new person's spaces wait for it
    portals.on_created.append(PortalSpaces(bridge.storage, spaces).portal_created)
    bridge.web.signin.notify = bridge.bot.tell
    return ghosts, portals, spaces


# ---- the people's side ---------------------------------------------------------------------

def build_people(bridge: Bridge, bot_intent: IntentAPI, ghosts: Ghosts, portals: Portals,
                 spaces: MatrixSpaces) -> None:
    """What people do through the bot, the API and the pages: the outbound queue,
    sessions, linking, mapping rules, and the commands for each."""
    cfg = bridge.config
    assert bridge.storage and bridge.security and bridge.accounts and bridge.merges
    assert bridge.bot and bridge.router and bridge.web and bridge.provisioning
    audit = bridge.security.audit
    bridge.delivery = Delivery(bridge.storage, bridge.router, portals, bridge.bot, audit,
                               bridge.metrics, DeliverySettings.from_config(
                                   lambda key: cfg[f"delivery.{key}"]))
    bridge._dispatcher = MatrixDispatcher(bridge.bot, bridge.router, portals, bridge.delivery,
                                          bridge.storage.encryption_notices, bridge.metrics)
    bridge.sessions = PersonaSessions(bridge.storage, bridge.security.vault, bridge.connectors,
                                      audit)
    bridge.linking = Linking(
        bridge.storage, bridge.accounts, bridge.security.vault, audit, bridge.connectors,
        bridge.sessions, mfa=bridge.security.mfa, policy=bridge.policy,
        callback_url=lambda network: bridge.web_url + callback_path(network),
        start_url=lambda network: bridge.web_url + start_path(network))
    bridge.linking.on_relinked.append(bridge.delivery.relinked)
    bridge._link_callbacks.linking = bridge.linking
    _wire_double_puppets(bridge, ghosts, portals)
    bridge.rules = MappingRules(bridge.storage, audit, portals, bridge.connectors, spaces)
    if bridge.workers is not None:
        wire_workers(bridge.workers, bridge.delivery, bridge.sessions, bridge.rules, portals,
                     bridge.storage.state_store, bridge.security.vault, bridge.linking)
    bridge.router.on_invite = bridge.rules.handle_invite
    bridge.backfill = Backfill(bridge.storage, bridge.connectors, bridge.router.gate,
                               bridge.router.handle_remote_event, audit,
                               BackfillSettings.from_config(cfg.get, cfg.network_names),
                               tell=bridge.bot.tell, in_flight=bridge.router.in_flight)
    bridge.rules.backfill = bridge.backfill
    if bridge.workers is not None:  # history is read where the network's sessions are
        bridge.backfill.serves = bridge.workers.serves
    # Direct chats have no rule: their portals bring their past in when made, and catch
    # up after a reconnect like mapped rooms do.
    bridge.direct_history = DirectHistory(bridge.storage, bridge.backfill)
    portals.on_direct_created.append(bridge.direct_history.portal_created)
    bridge.router.on_history_gap = bridge.direct_history.history_gap
    bridge.provisioning.linking, bridge.provisioning.rules = bridge.linking, bridge.rules
    bridge.provisioning.is_bridge_user = bridge.bot.is_bridge_user
    bridge.provisioning.user_exists = lambda mxid: homeserver_has_user(bot_intent, mxid)
    bridge.accounts.on_unlink.append(bridge.sessions.close)
    bridge.accounts.on_state_change.append(partial(persona_changed, bridge))
    bridge.accounts.before_destroy.append(partial(revoke_at_network, bridge))
    if bridge.portal is not None:
        bridge.portal.attach(bridge.linking, bridge.rules, bridge.capabilities,
                             bridge._link_callbacks)
    bridge.bot.on_new_management_room.append(bridge._ensure_account)
    matrix = bridge.connectors.get(MATRIX)
    if matrix is not None and cfg.get("double_puppet.auto"):
        bridge.bot.on_new_management_room.append(LinkOnFirstContact(
            bridge.bot, bridge.storage, bridge.accounts, bridge.linking, matrix))
    register_commands(bridge, portals, spaces)


def _wire_double_puppets(bridge: Bridge, ghosts: Ghosts, portals: Portals) -> None:
    """Where a person's Matrix persona is in use, their own Matrix user speaks for their
    remote accounts instead of their ghost; a token that stops working turns it
    read-only, like a refused send on any network."""
    assert bridge.appservice and bridge.storage and bridge.security and bridge.router
    assert bridge.delivery is not None
    puppets = DoublePuppets(bridge.appservice.intent, bridge.storage, bridge.security.audit,
                            ghosts)
    puppets.attach(bridge.connectors.get(MATRIX), bridge.config.get("double_puppet") or {},
                   bridge.config["homeserver.domain"], bridge.config["homeserver.address"])
    puppets.on_read_only = bridge.delivery.read_only
    bridge.router.own_users = puppets
    portals.on_created.append(puppets.portal_created)


async def persona_changed(bridge: Bridge, persona: Persona) -> None:
    assert bridge.sessions is not None and bridge.rules is not None
    await bridge.sessions.follow(persona)
    if persona.status == PersonaStatus.ACTIVE:
        await bridge.rules.activate_all(persona)
        if bridge.delivery is not None:
            await bridge.delivery.relinked(persona.id)  # resumed: what waited goes out


async def revoke_at_network(bridge: Bridge, persona: Persona) -> None:
    """Best effort: the credentials are destroyed here whatever the network answers."""
    connector = bridge.connectors.get(persona.platform)
    if connector is None or bridge.sessions is None:
        return
    try:
        credentials = await bridge.sessions.credentials(persona)
        revoked = await connector.revoke_access(persona.external_user_id, credentials)
    except Exception:
        log.warning("Could not revoke %s's access at %s", persona.id, persona.platform,
                    exc_info=True)
        return
    if revoked:
        log.info("%s revoked the bridge's access for persona %s", persona.platform,
                 persona.id)


# ---- the commands --------------------------------------------------------------------------

def register_commands(bridge: Bridge, portals: Portals, spaces: MatrixSpaces) -> None:
    """Every bot command, in the order `help` lists them within a section, with the wiring
    that belongs to each group."""
    assert bridge.storage and bridge.security and bridge.accounts and bridge.merges
    assert bridge.bot and bridge.web and bridge.linking and bridge.rules
    assert bridge.delivery is not None
    audit = bridge.security.audit
    commands = bridge.bot.commands
    register_builtin_commands(commands, bridge.network_status_detail)
    register_audit_commands(commands, audit)
    register_agent_commands(commands, bridge.storage, bridge.accounts, audit,
                            bridge.mcp and f"{bridge.web_url}/mcp")
    register_account_commands(commands, bridge.storage, bridge.accounts, bridge.merges, audit,
                              bridge.web_url, bridge.web.signin.undo_provider_added,
                              bridge.web.limits.merge_confirm, provider_names={
                                  p.id: p.config.name
                                  for p in bridge.web.signin.providers.values()})
    register_hold_commands(commands, bridge.web.holds)
    _wire_security(bridge)
    NetworkCommands(bridge.bot, bridge.storage, bridge.accounts, bridge.linking, bridge.rules,
                    portals, audit, bridge.delivery).register()
    _wire_privacy(bridge, portals, spaces)


def _wire_security(bridge: Bridge) -> None:
    """Capabilities and MFA commands; MFA before resuming a persona stopped by anomaly
    detection; anomalies stop sessions and tell the person."""
    assert bridge.security and bridge.bot and bridge.accounts and bridge.sessions
    assert bridge.capabilities is not None
    SecurityCommands(bridge.bot, bridge.accounts, bridge.capabilities,
                     bridge.security.mfa).register()
    bridge.accounts.resume_checks.append(bridge.security.mfa.check_resume)
    anomalies = bridge.security.anomalies
    anomalies.notify = bridge.bot.tell
    anomalies.on_stopped.append(bridge.sessions.follow)
    # A send refused for bad credentials is counted where the connector reports it
    # (`Connector.deliver`), once: not again when the persona turns read-only.


def _wire_privacy(bridge: Bridge, portals: Portals, spaces: MatrixSpaces) -> None:
    """Data residency, retention, my-data and forget-me (bridge/compliance/)."""
    cfg = bridge.config
    assert bridge.storage and bridge.security and bridge.accounts and bridge.bot
    assert bridge.rules and bridge.linking and bridge.provisioning
    residency = Residency.from_config(cfg)
    if residency is not None:
        portals.federation = spaces.federation = {"m.federate": False}
        bridge.rules.refuse_network = residency.network_refusal
        bridge.linking.refuse_network = residency.network_refusal
        domain = cfg["homeserver.domain"]
        bridge.rules.refuse_room = lambda state, room: residency.room_refusal(state, room,
                                                                             domain)
    audit = bridge.security.audit
    personal = bridge.provisioning.personal_data = PersonalData(bridge.storage, audit)
    PrivacyCommands(bridge.bot, bridge.accounts, personal, Forgetting(
        bridge.storage, bridge.accounts, bridge.security.vault, audit)).register()
    if days := cfg.get("compliance.retention_days"):
        bridge.retention = Retention(bridge.storage, audit, days,
                                     cfg["compliance.retention_interval_seconds"])
