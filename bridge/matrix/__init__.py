"""The Matrix side: appservice transactions in, intents out, portals, ghosts and spaces."""
