"""Accounts, profiles, personas and login identities; linking only with proof; merging."""
