"""One XMPP client session: TLS verified, SCRAM preferred, server found through SRV records."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import slixmpp

PLUGINS = ("xep_0030", "xep_0045", "xep_0199", "xep_0203", "xep_0308", "xep_0359", "xep_0424",
           "xep_0444", "xep_0461", "xep_0071", "xep_0085", "xep_0333", "xep_0428", "xep_0066",
           "xep_0363", "xep_0054", "xep_0249")


class XmppClient(slixmpp.ClientXMPP):
    def __init__(self, jid: str, password: str, *, ca_file: str | None = None,
                 nameserver: str | None = None) -> None:
        super().__init__(jid, password)
        self._nameserver = nameserver
        self.ca_file = ca_file
        if ca_file:
            self.ca_certs = Path(ca_file)
        # Certificates are always verified; PLAIN only ever goes over TLS.
        self.ssl_context.verify_mode = ssl.CERT_REQUIRED
        self.ssl_context.check_hostname = True
        self.plugin["feature_mechanisms"].unencrypted_plain = False
        self.plugin["feature_mechanisms"].unencrypted_scram = False
        for plugin in PLUGINS:
            self.register_plugin(plugin)
        # Why the addresses of the last connection round failed, for a message naming them.
        self.connection_errors: list[str] = []
        self.add_event_handler("connection_failed", self._note_failure)

    def configure_dns(self, resolver: Any, domain: str | None = None,
                      port: int | None = None) -> None:
        # Tests (and some deployments) resolve SRV records through a specific DNS server.
        if resolver is not None and self._nameserver:
            resolver.nameservers = [self._nameserver]

    def _note_failure(self, error: Any) -> None:
        self.connection_errors.append(str(error))

    def reschedule_connection_attempt(self) -> asyncio.Future | None:
        # slixmpp has tried every SRV target and every address of each (RFC 6120 3.2) when
        # it gets here; say so, so a one-shot login can stop instead of waiting for back-off.
        self.event("all_addresses_failed", list(self.connection_errors))
        self.connection_errors.clear()
        return super().reschedule_connection_attempt()

    @property
    def mechanism(self) -> str:
        """The SASL mechanism the server accepted (e.g. SCRAM-SHA-1-PLUS)."""
        mech = getattr(self.plugin["feature_mechanisms"], "mech", None)
        return getattr(mech, "name", None) or "SASL"

    def transport_description(self) -> str:
        """What was checked about this connection, in words, from its live state."""
        tls = self.socket if isinstance(self.socket, ssl.SSLObject | ssl.SSLSocket) else None
        if tls is None:
            return "over an unencrypted connection (no TLS)"
        context = self.ssl_context
        verified = context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        store = "the configured CA file" if self.ca_file else "the system's CA store"
        issuer = _common_name(tls.getpeercert() or {}, "issuer")
        checked = (f"certificate chain verified against {store} for {self.default_domain}"
                   + (f" (issued by {issuer})" if issuer else "")
                   if verified else "certificate NOT verified")
        return f"over {tls.version()} ({checked})"


def _common_name(cert: dict[str, Any], field: str) -> str | None:
    for rdn in cert.get(field, ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def tls_refusal(error: BaseException) -> str:
    """Why a certificate was refused, in words (the host name it was for, or its issuer)."""
    reason = getattr(error, "verify_message", None) or getattr(error, "reason", None)
    return str(reason or error)
