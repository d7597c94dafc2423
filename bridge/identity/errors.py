"""Refusals a person can read: the message says what is wrong; nothing was changed."""


class IdentityError(Exception):
    pass
