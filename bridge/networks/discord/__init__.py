"""The Discord network: the bridge's bot on the Gateway for everything received, one webhook
per bridged channel for what linked people (and relayed Matrix users) send, OAuth2 as the proof
that a person owns their Discord account."""
