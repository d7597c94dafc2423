"""Secrets and acting on a person's behalf: the vault, impersonation tokens."""
