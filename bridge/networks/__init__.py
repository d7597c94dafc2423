"""One package per network; each implements `networks.base.Connector`."""
