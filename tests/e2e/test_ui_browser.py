"""The whole product in a real browser: Debian's Chromium driven by Playwright, against real
API, worker and UI processes in embedded mode (SQLite, the file transport, the offline
model) — what `make demo` runs. Screenshots of each step land in
test-artifacts/ui/ (or QUARRY_TEST_ARTIFACTS/ui/).

Chromium comes from Debian (`/usr/bin/chromium`; .ci/run installs it), never from
`playwright install`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import TEST_SECRET
from tests.factories import CENSUS_CSV
from tests.test_agent_integration import ROOT, _free_port

CHROMIUM = "/usr/bin/chromium"
# what works on this kind of machine (closed network; run as root)
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = Path(os.environ.get("QUARRY_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "ui"
PASSWORD = "correct horse battery"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)"
)


def _wait(url: str, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not start")
        time.sleep(0.3)


@dataclass
class Embedded:
    url: str
    api: str
    start_worker: Callable[[], None]
    stop_worker: Callable[[], None]
    restart_ui: Callable[[], None]
    logs: Path  # each process's output: <name>.log


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    data = tmp_path_factory.mktemp("embedded")
    api_port, ui_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUARRY_", "LLM_"))}
    for key in ("DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY"):
        env.pop(key, None)
    env.update(
        DATA_DIR=str(data), JWT_SECRET_KEY=TEST_SECRET, LOG_LEVEL="WARNING",
        SANDBOX_UID_BASE="66000", PYTHONPATH=str(ROOT),
        QUARRY_API_URL=f"http://127.0.0.1:{api_port}",
    )  # fmt: skip
    subprocess.run([sys.executable, "-m", "api.prestart"], cwd=ROOT, env=env, check=True)
    logs = data / "logs"
    logs.mkdir()
    commands = {
        "worker": [
            sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--beat",
            "-Q", "analysis,datasets,maintenance", "--concurrency", "1",
            "--without-gossip", "--without-mingle", "-l", "WARNING",
        ],
        "api": [
            sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
            "--port", str(api_port), "--no-access-log",
        ],
        "ui": [
            sys.executable, "-m", "streamlit", "run", "frontend/server.py",
            "--server.address", "127.0.0.1", "--server.port", str(ui_port),
        ],
    }  # fmt: skip
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str) -> None:
        log = (logs / f"{name}.log").open("ab")
        procs[name] = subprocess.Popen(
            commands[name], cwd=ROOT, env=env, start_new_session=True, stdout=log, stderr=log
        )

    def stop(name: str) -> None:
        proc = procs.pop(name)
        os.killpg(proc.pid, signal.SIGTERM)  # a warm shutdown: its heartbeat row goes
        proc.wait(timeout=60)

    def restart_ui() -> None:
        stop("ui")
        start("ui")
        _wait(f"http://127.0.0.1:{ui_port}/_stcore/health", "the UI")

    for name in commands:
        start(name)
    try:
        _wait(f"http://127.0.0.1:{api_port}/healthz", "the API")
        _wait(f"http://127.0.0.1:{ui_port}/_stcore/health", "the UI")
        yield Embedded(
            url=f"http://127.0.0.1:{ui_port}",
            api=f"http://127.0.0.1:{api_port}",
            start_worker=lambda: start("worker"),
            stop_worker=lambda: stop("worker"),
            restart_ui=restart_ui,
            logs=logs,
        )
    finally:
        for proc in procs.values():
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for log in logs.iterdir():
            shutil.copy(log, ARTIFACTS / log.name)


def api_auth(ui: Embedded, email: str) -> dict[str, str]:
    """The user's own API token, to check what the UI did."""
    login = httpx.post(f"{ui.api}/api/auth/login", json={"email": email, "password": PASSWORD})
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def register(page: Any, email: str) -> None:
    """Create an account on the sign-in page; the user is then signed in."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Create an account").click()
    page.locator(".st-key-register-email input").fill(email)
    page.locator(".st-key-register-password input").fill(PASSWORD)
    page.get_by_role("button", name="Create the account").click()
    expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()


def test_register_upload_ask_reload_and_stay_private(ui: Embedded, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # Assertions wait as a user would (an upload is converted by the worker; on a busy
    # machine that takes more than Playwright's default 5 s), not forever.
    expect.set_options(timeout=30_000)
    csv = tmp_path / "census.csv"
    csv.write_bytes(CENSUS_CSV)
    stamp = int(time.time())
    alice, bob = f"alice-{stamp}@example.com", f"bob-{stamp}@example.com"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1700})
        page.set_default_timeout(60_000)

        def shot(name: str) -> None:
            page.wait_for_timeout(500)  # let the last render settle
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

        page.goto(ui.url)
        register(page, alice)
        shot("01-signed-in")

        page.get_by_role("link", name="Datasets").click()
        page.locator("input[type=file]").set_input_files(str(csv))
        # the browser sends the file when it is chosen; submitting before that has finished
        # submits no file (the page then says to choose one)
        expect(page.get_by_text("census.csv")).to_be_visible()
        page.get_by_role("button", name="Upload and convert").click()
        expect(page.get_by_text("Upload finished")).to_be_visible()
        expect(page.get_by_role("heading", name="census")).to_be_visible()
        shot("02-datasets")

        page.get_by_role("link", name="Chat").click()
        page.get_by_role("button", name="New analysis").click()
        page.get_by_role("combobox").first.click()
        page.get_by_role("option", name="census").click()
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Start").click()
        expect(page.get_by_role("heading", name="Analysis of census")).to_be_visible()
        page.get_by_placeholder("Ask about your data…").fill("show the distribution of age")
        page.keyboard.press("Enter")
        chart = page.locator("[data-testid='stPlotlyChart']").first
        expect(chart).to_be_visible(timeout=90_000)
        expect(page.get_by_text("Code ran")).to_be_visible()
        shot("03-chat-with-chart")
        session_url = page.url
        assert "session=" in session_url

        # a reload keeps the user signed in (the browser's cookie) and in the session
        page.reload()
        expect(page.get_by_text(f"Signed in as {alice}")).to_be_visible()
        assert page.url == session_url
        expect(page.get_by_text("show the distribution of age")).to_be_visible()
        expect(page.locator("[data-testid='stPlotlyChart']").first).to_be_visible()
        shot("04-after-reload")

        # the session as a notebook
        page.get_by_role("button", name="Export notebook").click()
        page.get_by_role("button", name="Prepare the notebook").click()
        with page.expect_download() as download:
            page.get_by_role("button", name="Save .ipynb").click()
        book = json.loads(Path(download.value.path()).read_text())
        assert book["nbformat"] == 4
        assert any("census.parquet" in "".join(c["source"]) for c in book["cells"])
        page.keyboard.press("Escape")

        # edit the agent's code into a long loop, run it, and stop it
        page.get_by_role("button", name="Edit & re-run").first.click()
        editor = page.locator("[class*='st-key-edit-'] textarea").first
        editor.fill("total = 0\nfor i in range(10**10):\n    total += i")
        page.get_by_role("button", name="Run in the sandbox").click()
        expect(page.get_by_role("dialog")).to_have_count(0)  # the editor closed
        page.get_by_role("button", name="Stop").click()
        expect(page.get_by_text("Code stopped").first).to_be_visible()
        shot("05-stopped")

        # no worker: the question says so instead of an empty answer, and is answered once
        # a worker starts
        ui.stop_worker()
        deadline = time.monotonic() + 60
        while httpx.get(f"{ui.api}/readyz", timeout=5).json()["queues"]["analysis"]["workers"]:
            assert time.monotonic() < deadline, "the stopped worker still looks alive"
            time.sleep(0.5)
        page.get_by_placeholder("Ask about your data…").fill("What is the average income?")
        page.keyboard.press("Enter")
        expect(page.get_by_text("No analysis worker is running")).to_be_visible(timeout=30_000)
        shot("06-no-worker")
        ui.start_worker()
        expect(page.get_by_text("No analysis worker is running")).to_have_count(0, timeout=90_000)
        incomes = [int(line.split(b",")[1]) for line in CENSUS_CSV.splitlines()[1:]]
        mean = sum(incomes) / len(incomes)  # 69375.0, what the question asks for
        answer = page.get_by_role("group", name="Chat message from assistant").last
        expect(answer).to_contain_text(f"{mean}", timeout=30_000)
        shot("07-answered-once-a-worker-started")

        page.get_by_role("button", name="Sign out", exact=True).click()
        register(page, bob)
        expect(page.get_by_text("No sessions yet.")).to_be_visible()
        expect(page.get_by_text("Analysis of census")).to_have_count(0)
        page.goto(session_url)  # Alice's session, by its address (Bob is still signed in)
        expect(page.get_by_text(f"Signed in as {bob}")).to_be_visible()
        expect(page.get_by_text("does not exist (or is not yours)")).to_be_visible()
        expect(page.locator("[data-testid='stPlotlyChart']")).to_have_count(0)
        shot("08-another-user")
        browser.close()


def test_a_failed_upload_says_why_and_a_new_chat_offers_questions(
    ui: Embedded, tmp_path: Path
) -> None:
    """A file that cannot be converted says why in plain sight (never "Upload finished");
    scikit-learn's wine_data.csv (a metadata line, no header) is read and says how; an
    empty chat offers questions, and one click asks one."""
    import sklearn.datasets
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)
    ragged = tmp_path / "ragged.csv"
    ragged.write_bytes(b"a,b\n" + b"1,2,3,4\n" * 50)
    wine = Path(sklearn.datasets.__file__).parent / "data" / "wine_data.csv"
    email = f"carol-{int(time.time())}@example.com"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1700})
        page.set_default_timeout(60_000)
        page.goto(ui.url)
        register(page, email)

        page.get_by_role("link", name="Datasets").click()
        page.locator("input[type=file]").set_input_files(str(ragged))
        expect(page.get_by_text("ragged.csv")).to_be_visible()
        page.get_by_role("button", name="Upload and convert").click()
        expect(page.get_by_text("could not be converted:").first).to_be_visible()
        expect(page.get_by_text("None of the rows has the header's 2 fields").first).to_be_visible()
        expect(page.get_by_text("Upload finished")).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "09-upload-failed.png"), full_page=True)

        page.locator("input[type=file]").set_input_files(str(wine))
        expect(page.get_by_text("wine_data.csv")).to_be_visible()
        page.get_by_role("button", name="Upload and convert").click()
        expect(page.get_by_text("Upload finished")).to_be_visible()
        page.get_by_role("combobox", name="Open a dataset").click()
        page.get_by_role("option", name="wine_data").click()
        expect(page.get_by_text("read as a title and skipped")).to_be_visible()
        expect(page.get_by_text("has no header row")).to_be_visible()

        # the same bytes again (downloaded twice): said, and the existing dataset offered
        again = tmp_path / "wine_data (1).csv"
        again.write_bytes(wine.read_bytes())
        page.locator("input[type=file]").set_input_files(str(again))
        expect(page.get_by_text("wine_data (1).csv")).to_be_visible()
        page.get_by_role("button", name="Upload and convert").click()
        expect(page.get_by_text("is already uploaded, byte for byte")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "09b-duplicate-upload.png"), full_page=True)
        page.get_by_role("button", name="Use the existing dataset").click()
        expect(page.get_by_text("is already uploaded, byte for byte")).to_have_count(0)
        expect(page.get_by_text("Upload finished")).to_have_count(0)
        listed = httpx.get(f"{ui.api}/api/datasets", headers=api_auth(ui, email)).json()
        assert sorted(d["name"] for d in listed["data"]) == ["ragged", "wine_data"]

        page.get_by_role("link", name="Chat").click()
        page.get_by_role("button", name="New analysis").click()
        page.get_by_role("combobox").first.click()
        page.get_by_role("option", name="wine_data").click()
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Start").click()
        expect(page.get_by_text("Try one of these")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "10-offered-questions.png"), full_page=True)
        page.get_by_role("button", name="Distribution of column_1").click()
        answer = page.get_by_role("group", name="Chat message from assistant").last
        expect(answer).to_contain_text("The distribution of column_1", timeout=90_000)
        expect(page.locator("[data-testid='stPlotlyChart']").first).to_be_visible()

        # a wide answer (14 x 14 correlations) scrolls inside the answer, not off the page
        page.get_by_placeholder("Ask about your data…").fill("correlation matrix")
        page.keyboard.press("Enter")
        answer = page.get_by_role("group", name="Chat message from assistant").last
        expect(answer).to_contain_text("correlation matrix of the numeric columns:", timeout=90_000)
        wide = answer.locator("[data-testid='stMarkdownContainer'] table").last
        expect(wide).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "10b-wide-answer.png"), full_page=True)
        inside, needs = wide.evaluate("t => [t.clientWidth, t.scrollWidth]")
        assert inside < needs  # it scrolls ...
        assert wide.bounding_box()["width"] <= answer.bounding_box()["width"]  # ... in place
        browser.close()


def test_a_browser_stays_signed_in_across_reloads_tabs_and_a_ui_restart(ui: Embedded) -> None:
    """The refresh token lives in an HttpOnly, SameSite=Strict cookie that page scripts
    cannot read; each tab forks its own tokens from it, so tabs reloading at once never
    look like a stolen token; signing out clears it."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)
    email = f"dave-{int(time.time())}@example.com"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1100})
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(ui.url)
        register(page, email)
        signed_in = page.get_by_text(f"Signed in as {email}")

        def kept() -> list[dict[str, object]]:
            return [c for c in context.cookies() if c["name"] == "quarry_refresh"]

        deadline = time.monotonic() + 15
        while not kept():
            assert time.monotonic() < deadline, "the browser was not given its cookie"
            time.sleep(0.2)
        [cookie] = kept()
        assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/")
        assert "quarry_refresh" not in page.evaluate("document.cookie")  # scripts cannot read it

        session = httpx.post(
            f"{ui.api}/api/sessions",
            json={"title": "Kept open", "dataset_ids": []},
            headers=api_auth(ui, email),
        ).json()

        # a new tab on a session's address (a bookmark, a link) lands in it, signed in
        tab = context.new_page()
        tab.set_default_timeout(60_000)
        tab.goto(f"{ui.url}/?session={session['id']}")
        expect(tab.get_by_text(f"Signed in as {email}")).to_be_visible()
        expect(tab.get_by_role("heading", name="Kept open")).to_be_visible()
        # the sidebar's Charts link keeps the open session
        tab.get_by_role("link", name="Charts").click()
        expect(tab.get_by_text("No charts in this session yet")).to_be_visible()
        assert f"session={session['id']}" in tab.url

        # both tabs reload at the same moment: neither is signed out
        page.reload(wait_until="commit")
        tab.reload(wait_until="commit")
        expect(signed_in).to_be_visible()
        expect(tab.get_by_text(f"Signed in as {email}")).to_be_visible()
        expect(tab.get_by_text("No charts in this session yet")).to_be_visible()

        # the UI restarts (every tab's server-side state is gone): a reload is still signed in
        ui.restart_ui()
        page.reload()
        expect(signed_in).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "11-signed-in-after-ui-restart.png"), full_page=True)

        # signing out clears the cookie: the other tab's reload asks to sign in
        page.get_by_role("button", name="Sign out", exact=True).click()
        expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
        deadline = time.monotonic() + 15
        while kept():
            assert time.monotonic() < deadline, "signing out left the cookie"
            time.sleep(0.2)
        tab.reload()
        expect(tab.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
        expect(tab.get_by_text(f"Signed in as {email}")).to_have_count(0)

        # the Charts page of a session, opened by its address before signing in, is where
        # signing in lands
        tab.goto(f"{ui.url}/charts?session={session['id']}")
        tab.locator(".st-key-login-email input").fill(email)
        tab.locator(".st-key-login-password input").fill(PASSWORD)
        tab.get_by_role("button", name="Sign in", exact=True).click()
        expect(tab.get_by_text("No charts in this session yet")).to_be_visible()
        assert "/charts?session=" in tab.url
        browser.close()


def test_the_ui_logs_no_deprecation_warning(ui: Embedded) -> None:
    """Runs last, after every page was used: Streamlit logs a warning each time a page
    calls an API it deprecates (`use_container_width` printed 162 of them in 12 minutes of
    `make demo`), burying what an operator needs to see."""
    log = (ui.logs / "ui.log").read_text(errors="replace")
    assert "Local URL" in log or "You can now view" in log  # the UI's own output is here
    noise = [line for line in log.splitlines() if "deprecat" in line.lower()]
    assert noise == []
