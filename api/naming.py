"""Names derived from what users typed: a dataset's Python variable, a safe file name.

The worker (variables the sandbox binds) and the API (the notebook export) must agree on
them, so they live here.
"""

from __future__ import annotations

import keyword
import re

_EXTENSIONS = re.compile(r"\.(csv|tsv|txt|json|jsonl|parquet|xlsx?|xlsm|zip)$", re.I)


def variable_name(name: str, taken: set[str]) -> str:
    """A dataset's name as a Python identifier: "Sales 2024.csv" -> sales_2024."""
    stem = _EXTENSIONS.sub("", name.strip())
    base = re.sub(r"\W+", "_", stem.lower()).strip("_") or "data"
    if base[0].isdigit() or keyword.iskeyword(base):
        base = f"data_{base}"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}_{n}", n + 1
    return candidate


def file_name(name: str, extension: str, fallback: str = "dataset") -> str:
    """A name safe in a Content-Disposition header and on any file system."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or fallback
    return f"{base[:100]}.{extension}"
