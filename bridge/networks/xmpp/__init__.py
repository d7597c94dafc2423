"""XMPP, with slixmpp: one client session per linked person."""
