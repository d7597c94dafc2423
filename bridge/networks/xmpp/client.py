"""One XMPP client session: TLS verified, SCRAM preferred, server found through SRV records."""

from __future__ import annotations

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
        if ca_file:
            self.ca_certs = Path(ca_file)
        # Certificates are always verified; PLAIN only ever goes over TLS.
        self.ssl_context.verify_mode = ssl.CERT_REQUIRED
        self.ssl_context.check_hostname = True
        self.plugin["feature_mechanisms"].unencrypted_plain = False
        self.plugin["feature_mechanisms"].unencrypted_scram = False
        for plugin in PLUGINS:
            self.register_plugin(plugin)

    def configure_dns(self, resolver: Any, domain: str | None = None,
                      port: int | None = None) -> None:
        # Tests (and some deployments) resolve SRV records through a specific DNS server.
        if resolver is not None and self._nameserver:
            resolver.nameservers = [self._nameserver]
