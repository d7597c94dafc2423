"""Matrix as a network a person links: their own Matrix account acting for them (double
puppeting). Linked with the appservice-token method on servers the admin configured
(`double_puppet.secrets`) or with a client login (a password or an access token) elsewhere;
verified with `whoami` either way."""
