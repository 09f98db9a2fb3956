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


ROOT = DOCS.parent
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found: set[str] = set()
    in_fence = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        heading = re.match(r"^#{1,6}\s+(.*)", line)
        if in_fence or not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in found:
            n += 1
            anchor = f"{slug}-{n}"
        found.add(anchor)
    return found


def _links(page: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    return [a or b for a, b in LINK.findall(text)]


def test_links_between_the_docs_resolve() -> None:
    broken = []
    for page in PAGES:
        for target in _links(page):
            if re.match(r"^[a-z]+:", target):  # http(s), mailto: not checked here
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_the_docs_the_readme_promises_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("SETUP", "API", "ARCHITECTURE", "SECURITY", "DEPLOYMENT", "OPERATIONS"):
        assert f"docs/{name}.md" in readme, name
        assert (DOCS / f"{name}.md").exists(), name


def test_every_setting_is_in_the_configuration_reference_and_env_example() -> None:
    """docs/SETUP.md's table and .env.example document every variable Settings reads."""
    from api.config import Settings

    setup = (DOCS / "SETUP.md").read_text()
    example = (ROOT / ".env.example").read_text()
    missing_docs, missing_example = [], []
    for name, field in Settings.model_fields.items():
        names = {name.upper()}
        choices = getattr(field.validation_alias, "choices", None)
        names |= {str(c).upper() for c in choices or ()}
        if not any(f"`{n}`" in setup for n in names):
            missing_docs.append(name.upper())
        if not any(re.search(rf"^#?\s*{n}=", example, re.MULTILINE) for n in names):
            missing_example.append(name.upper())
    assert missing_docs == [], "add these to the table in docs/SETUP.md"
    assert missing_example == [], "add these to .env.example"


def test_the_quick_start_tells_a_newcomer_what_to_expect() -> None:
    """In the quick start, not in a table further down: the first run installs, how to move
    the ports and the data, how to stop, and that the keyless assistant knows a defined set
    of questions (with where to find them)."""
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    for promise in (
        "first run installs",
        "PORT=",
        "UI_PORT=",
        "DATA_DIR=",
        "Ctrl-C",
        "a defined set of questions",
        "Model",
        "docs/OFFLINE_MODEL.md",
    ):
        assert promise in quick_start, promise
