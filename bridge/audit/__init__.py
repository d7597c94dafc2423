"""The audit trail: append-only, hash-chained, MAC-protected, readable by the person."""

from .log import GENESIS, AuditEvent, AuditLog, AuditProblem, record_mac

__all__ = ["GENESIS", "AuditEvent", "AuditLog", "AuditProblem", "record_mac"]
