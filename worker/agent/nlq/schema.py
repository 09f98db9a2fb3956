"""The offline model's view of a session's tables: `api/profiles.py`'s, read from the
schema line of the system prompt and, when the worker passes them, the datasets' profiles
(`local_profiles`: the offline model runs in the worker, so nothing here leaves it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage, SystemMessage

from api.profiles import (
    BOOL,
    DATE,
    INDEX,
    NUMBER,
    TEXT,
    Column,
    Table,
    kind_of,
    looks_like_date,
    tables,
)

__all__ = [
    "BOOL",
    "DATE",
    "INDEX",
    "NUMBER",
    "TEXT",
    "Column",
    "Table",
    "kind_of",
    "looks_like_date",
    "schema_line",
    "tables",
]


def schema_line(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """The datasets' JSON line of the system prompt (see worker/agent/context.py)."""
    for m in messages:
        if isinstance(m, SystemMessage) and isinstance(m.content, str):
            for line in m.content.splitlines():
                if line.startswith("[") and '"variable"' in line:
                    try:
                        found = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(found, list):
                        return [d for d in found if isinstance(d, dict)]
    return []
