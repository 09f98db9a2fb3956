"""The docs stay true: every route the API serves is documented in docs/API.md."""

from __future__ import annotations

import re
from pathlib import Path

from tests.factories import api_routes

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_route_is_documented_in_api_md() -> None:
    text = (DOCS / "API.md").read_text()
    documented = set(re.findall(r"^### `([A-Z]+) (/[^`?]*)`", text, flags=re.MULTILINE))
    served = {(method, path) for method, path in api_routes() if method != "HEAD"}
    assert served - documented == set(), "document these routes in docs/API.md"
    assert documented - served == set(), "docs/API.md documents routes that do not exist"


def test_every_documented_route_has_a_curl_example() -> None:
    text = (DOCS / "API.md").read_text()
    sections = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    missing = [s.splitlines()[0] for s in sections if "curl " not in s]
    assert missing == []
