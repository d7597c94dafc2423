"""The words the bot and the pages share: one place, so a person reads the same name for the
same thing in their management room and in the browser."""

from __future__ import annotations

from collections.abc import Mapping

SIGN_IN_METHODS = "Sign-in methods"
LINKED_ACCOUNTS = "Linked accounts"
PROFILES = "Profiles"
MAPPING_RULES = "Mapping rules"
CAPABILITIES = "Capabilities"
NO_LINKED_ACCOUNTS = "no linked accounts"
NO_RULES = "No mapping rules yet."
MATRIX_SIGN_IN = "your Matrix account (send login-link for the web)"

# A linked account's status (db.persona.PersonaStatus values) in words.
STATUS_WORDS: Mapping[str, str] = {
    "active": "active",
    "paused": "paused",
    "read_only": "read-only",
    "needs_reauth": "needs re-authentication",
    "revoked": "revoked",
}

# What each action on a linked account does: the bot's command summaries and the pages'
# buttons and confirmations.
PERSONA_ACTIONS: Mapping[str, str] = {
    "pause": "Stop a linked account at once (keeps it linked)",
    "resume": "Start a paused account again",
    "revoke": "Stop an account and destroy its credentials",
    "unlink": "Unlink an account and destroy its credentials",
    "relink": "Prove a linked account again (after its access was revoked); what waited for "
              "it is then sent",
}


def status_words(status: str) -> str:
    return STATUS_WORDS.get(status, status)


def persona_ref(platform: str, external_user_id: str) -> str:
    return f"{platform}:{external_user_id}"


def persona_now(platform: str, external_user_id: str, status: str) -> str:
    return f"{persona_ref(platform, external_user_id)} is now {status_words(status)}."


def unlinked(platform: str, external_user_id: str) -> str:
    return f"Unlinked {persona_ref(platform, external_user_id)}; its credentials were destroyed."


def profile_created(name: str) -> str:
    return f'Created the profile "{name}"; you are invited to its space.'


def profile_renamed(old: str, new: str) -> str:
    return f'Renamed "{old}" to "{new}".'


def profile_deleted(name: str) -> str:
    return f'Deleted the profile "{name}".'


def linked(platform: str, external_user_id: str) -> str:
    return f"Linked {persona_ref(platform, external_user_id)}."


def rule_mapped(network: str, remote: str, profile: str, where: str, rule_id: str) -> str:
    if "*" in remote:
        return (f"Rooms matching {remote} on {network} will be mapped into {profile} when you "
                f"are invited to them. Rule {rule_id}.")
    return f"Mapped {network} {remote} into {profile} ({where}). Rule {rule_id}."


def rule_removed(network: str, remote: str) -> str:
    return f"Removed the rule for {network} {remote}."


def capability_changed(effect: str, actions: list[str] | tuple[str, ...], profile: str,
                       scope: str, rule_id: str, agent: str | None = None) -> str:
    verb = "may now" if effect == "allow" else "may no longer"
    who = f"your agent {agent}" if agent else "RelayForge"
    return (f"{who} {verb} {', '.join(actions)} as you ({profile}) on {scope}. "
            f'Rule {rule_id}; see "capabilities".')


def capability_removed(rule_id: str) -> str:
    return f"Removed {rule_id}."


# The audit trail's kinds of record (audit.AuditEvent values) in words.
AUDIT_WORDS: Mapping[str, str] = {
    "account_created": "Account created",
    "link": "Linked",
    "unlink": "Unlinked",
    "merge": "Accounts merged",
    "pending_choice": "Sign-in waiting for an account choice",
    "token_refresh": "Credentials refreshed",
    "impersonated_send": "Sent as you",
    "pause": "Paused",
    "resume": "Resumed",
    "revoke": "Revoked",
    "mfa": "Multi-factor authentication",
    "export": "Exported",
    "key_rotation": "Keys rotated",
    "admin_action": "Changed",
    "first_send_confirmation": "First message confirmed or dropped",
    "capability": "Capabilities changed",
    "mfa_enrolled": "Multi-factor authentication set up",
    "mfa_verified": "Multi-factor code accepted",
    "mfa_failed": "Multi-factor code refused",
    "anomaly": "Unusual activity stopped",
    "session_network_changed": "Web session ended (used from another network)",
    "read_only": "Network refused access (read-only)",
    "agent": "AI agent",
}

# Details of audit records in words (the keys records carry).
_DETAIL_WORDS: Mapping[str, str] = {
    "what": "", "platform": "network", "network": "network", "remote": "room",
    "provider": "sign-in provider", "step": "step", "checks": "checked", "change": "change",
    "actions": "actions", "scope": "on", "rule": "rule", "channel": "room",
    "decision": "decision", "external_user_id": "account", "how": "how", "agent": "agent",
}
_WHAT_WORDS: Mapping[str, str] = {
    "rule_added": "mapping rule added", "rule_removed": "mapping rule removed",
    "viewed_account": "account viewed by support", "profile_created": "profile created",
    "sign_out": "signed out",
}


def audit_kind(event_type: str) -> str:
    return AUDIT_WORDS.get(event_type, event_type.replace("_", " ").capitalize())


def audit_details(details: Mapping[str, object]) -> str:
    """A record's details as a person reads them (internal keys such as issuers left out)."""
    parts = []
    for key, value in sorted(details.items()):
        if value is None or value == "" or key not in _DETAIL_WORDS:
            continue
        if key == "what":
            parts.insert(0, _WHAT_WORDS.get(str(value), str(value).replace("_", " ")))
            continue
        if isinstance(value, bool):
            if value:
                parts.append(key.replace("_", " "))
            continue
        parts.append(f"{_DETAIL_WORDS[key]} {value}")
    return "; ".join(parts)
