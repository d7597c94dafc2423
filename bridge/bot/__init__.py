"""The management bot: its commands, and the dispatcher of Matrix events to the bot or router."""
