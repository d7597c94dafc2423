"""Compliance: legal holds, the sealed archive of held messages, and verifiable exports."""
