"""The row type both drivers return: asyncpg.Record or sqlite3.Row, read by column name."""

from collections.abc import Mapping
from typing import Any

Record = Mapping[str, Any]
