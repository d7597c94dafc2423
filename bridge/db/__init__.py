"""Storage: one module per table, numbered migrations in `upgrade.py`."""

from .database import Storage, open_database
from .management_room import ManagementRoomStore
from .message import MessageKind, MessageRow, MessageStore
from .portal import Portal, PortalStore
from .puppet import Puppet, PuppetStore
from .transaction import TransactionStore

__all__ = [
    "ManagementRoomStore",
    "MessageKind",
    "MessageRow",
    "MessageStore",
    "Portal",
    "PortalStore",
    "Puppet",
    "PuppetStore",
    "Storage",
    "TransactionStore",
    "open_database",
]
