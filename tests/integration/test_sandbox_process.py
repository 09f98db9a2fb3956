"""The process backend's mechanics: datasets handed over as descriptors, the workspace
round trip, deadlines, output caps, crashes, a dying pool, shutdown, and refusing to run
without isolation. (tests/security/ holds the attacks.)"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from runner.job import REPLACED_SURROGATES
from tests.builders import dataset_files
from worker.sandbox import isolation
from worker.sandbox.base import KILL_GRACE_S, SHOWN_WITHOUT_NUL, SandboxUnavailable
from worker.sandbox.process import UID_BLOCK, ProcessBackend, ProcessConfig, lease_uid_block

CENSUS = pd.DataFrame(
    {
        "age": [25, 30, 35, 40, 45, 50, 55, 60],
        "income": [30000, 45000, 55000, 65000, 75000, 85000, 95000, 105000],
        "education": ["HS", "BS", "BS", "MS", "MS", "PhD", "PhD", "PhD"],
        "workclass": ["Private", "Private", "Gov", "Private", "Gov", "Private", "Self", "Self"],
    }
)
# Each backend of this module runs its sandboxes under uids of its own, so that what one
# leaves behind is told apart from another's waiting pool.
SHARED_UID_BASE = 61000
OWN_UID_BASE = 65000


@pytest.fixture(scope="module")
def backend() -> Iterator[ProcessBackend]:
    with ProcessBackend(ProcessConfig(warm=True, pool_size=2, uid_base=SHARED_UID_BASE)) as warm:
        yield warm


@pytest.fixture(scope="module")
def census(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return dataset_files(CENSUS, tmp_path_factory.mktemp("census"))


def job(code: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "limits": {"timeout_s": 20}, **extra}


def sandbox_processes(uids: range = range(SHARED_UID_BASE, SHARED_UID_BASE + 1000)) -> list[int]:
    """Host pids of live (not zombie) processes running as one of `uids`."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                if (
                    os.stat(f"/proc/{entry}").st_uid in uids
                    and stat.rsplit(")", 1)[1].split()[0] != "Z"
                ):
                    pids.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return pids


@pytest.mark.parametrize("fmt", ["arrow", "parquet", "csv"])
def test_datasets_arrive_as_read_only_descriptors(
    backend: ProcessBackend, census: dict[str, Path], fmt: str
) -> None:
    dataset = {"name": "df", "path": str(census[fmt]), "format": fmt}
    result = backend.run(job("print(df.shape)\ndf['age'].mean()", datasets=[dataset]))
    assert result["error"] is None
    assert (result["ok"], result["stdout"], result["result"]) == (True, "(8, 4)\n", "42.5")


def test_the_snippet_cannot_write_to_its_dataset(
    backend: ProcessBackend, census: dict[str, Path]
) -> None:
    before = census["arrow"].read_bytes()
    dataset = {"name": "df", "path": str(census["arrow"]), "format": "arrow"}
    result = backend.run(job("df['age'] = 0\ndf['age'].sum()", datasets=[dataset]))
    assert result["result"] == "0"  # the snippet's own copy changed...
    assert census["arrow"].read_bytes() == before  # ...the file did not


def test_the_workspace_carries_values_to_the_next_snippet(
    backend: ProcessBackend, census: dict[str, Path], tmp_path: Path
) -> None:
    dataset = {"name": "df", "path": str(census["arrow"]), "format": "arrow"}
    first = backend.run(
        job("young = df[df['age'] < 40]\nthreshold = 40\nlabels = ['a', 'b']", datasets=[dataset])
    )
    assert first["ok"], first["error"]
    entries = {e["name"]: e for e in first["workspace"]}
    assert set(entries) == {"young", "threshold", "labels"}
    assert entries["young"]["shape"] == [3, 4]
    assert entries["threshold"]["value"] == 40

    (tmp_path / "young.arrow").write_bytes(base64.b64decode(entries["young"]["arrow"]))
    (tmp_path / "threshold.json").write_text(json.dumps(entries["threshold"]["value"]))
    workspace = [
        {"name": "young", "path": str(tmp_path / "young.arrow"), "kind": "dataframe"},
        {"name": "threshold", "path": str(tmp_path / "threshold.json"), "kind": "value"},
    ]
    second = backend.run(job("len(young), young['age'].max() < threshold", workspace=workspace))
    assert second["ok"], second["error"]
    assert second["result"] == "(3, True)"
    assert second["workspace"] == []  # nothing changed, nothing to keep again


def test_a_python_loop_stops_at_the_deadline(backend: ProcessBackend) -> None:
    started = time.monotonic()
    result = backend.run({"code": "while True:\n    pass", "limits": {"timeout_s": 2}})
    elapsed = time.monotonic() - started
    assert result["ok"] is False
    assert result["error"]["type"] == "TimeoutError"
    assert 1.5 < elapsed < 4


def test_a_long_call_in_c_is_killed_at_the_deadline() -> None:
    """Catastrophic regex backtracking runs inside the C regex engine, where no signal
    handler runs: the parent's kill ends it. A pool of one: after a first job (its child
    is uid base + 1), this one runs in the second child the zygote forks, uid base + 2."""
    with ProcessBackend(ProcessConfig(warm=True, pool_size=1, uid_base=OWN_UID_BASE)) as own:
        assert own.run(job("1"))["ok"]
        started = time.monotonic()
        code = "import re\nre.match('(a+)+$', 'a' * 64 + 'b')"
        result = own.run({"code": code, "limits": {"timeout_s": 2}})
        assert result["error"]["type"] == "TimeoutError"
        assert time.monotonic() - started < 5  # the 2 s deadline, not the regex's hours
        time.sleep(0.3)
        assert sandbox_processes(range(OWN_UID_BASE + 1, OWN_UID_BASE + 3)) == []


def stopped_after(result: dict[str, Any]) -> float:
    """The time a timeout message says the snippet had run ("... stopped after 3.0 s.")."""
    message = result["error"]["message"]
    return float(message.rsplit(" stopped after ", 1)[1].removesuffix(" s."))


@pytest.mark.parametrize(
    "code",
    [
        "while True:\n    pass",  # stopped by the runner's own timer
        "sum(range(10 ** 12))",  # one long call in C: stopped by the backend's kill
        # swallows the runner's timer: stopped by the backend's kill
        "while True:\n    try:\n        while True:\n            pass\n"
        "    except BaseException:\n        pass",
    ],
    ids=["python-loop", "call-in-c", "swallows-the-timer"],
)
def test_a_snippet_runs_for_the_limit_it_is_told_and_hears_how_long_it_ran(
    backend: ProcessBackend, code: str
) -> None:
    """With SANDBOX_TIMEOUT_S=30 users were told "ran longer than 30 s" by a timer that
    fired at 27 s. The limit named is the one enforced: no snippet is stopped before it,
    and the message says how long the snippet had run when it was stopped."""
    limit = 3
    assert backend.run(job("1"))["ok"]  # the pool is up: only the snippet is timed below
    started = time.monotonic()
    result = backend.run({"code": code, "limits": {"timeout_s": limit}})
    elapsed = time.monotonic() - started

    assert result["error"]["type"] == "TimeoutError", result["error"]
    assert result["error"]["message"].startswith(f"The snippet ran longer than {limit} s and ")
    assert elapsed >= limit  # never before the limit it names
    assert limit <= stopped_after(result) <= elapsed
    # and not long after it: the runner stops it at the limit, the backend's kill follows
    # KILL_GRACE_S later (generous: a loaded machine schedules late)
    assert elapsed < limit + KILL_GRACE_S + 5


@pytest.mark.parametrize(
    ("code", "where"),
    [
        ("print('a\\ud800b')", "stdout"),
        ("s = 'a\\udcffb'", "workspace"),
        ("x = {'key': ['a\\udcffb']}", "workspace"),
        (
            "import pandas as pd\n"
            "pd.DataFrame({'name': pd.Series(['a\\udcffb'], dtype=object), 'n': [1]})",
            "tables",
        ),
        # plotly's fast encoder refuses it; its standard one escapes it ("\\udcff")
        ("import plotly.graph_objects as go\ngo.Figure(go.Bar(x=['a\\udcffb'], y=[1]))", "figures"),
    ],
    ids=["printed", "string-value", "nested-value", "dataframe-cell", "figure"],
)
def test_text_that_is_not_valid_unicode_is_replaced_and_the_snippet_succeeds(
    backend: ProcessBackend, code: str, where: str
) -> None:
    """A lone surrogate cannot be encoded as UTF-8: the result could not be sent and the
    user was told the snippet "used more than its memory ... or crashed". It is replaced
    by U+FFFD, and a note says so."""
    result = backend.run(job(code))

    assert result["ok"] is True, result["error"]
    assert REPLACED_SURROGATES in result["notes"]
    shown = json.dumps(result[where], ensure_ascii=False)
    assert "a\ufffdb" in shown
    json.dumps(result, ensure_ascii=False).encode("utf-8")  # storable, sendable as it is
    assert backend.run(job("1 + 1"))["result"] == "2"  # the pool carries on


def test_nul_characters_are_shown_as_replacement_characters_and_kept_in_the_workspace(
    backend: ProcessBackend,
) -> None:
    """What a snippet shows goes into PostgreSQL, which refuses NUL in text: a printed NUL
    or a DataFrame cell holding one (a dataset may hold them) failed the whole run with
    "unexpected error (DataError)". Shown, it is U+FFFD, with a note; kept, it is intact."""
    code = (
        "import pandas as pd\n"
        "print('a\\x00b')\n"
        "kept = 'k\\x00'\n"
        "pd.DataFrame({'name\\x00': ['x\\x00y']})"
    )

    result = backend.run(job(code))

    assert result["ok"] is True, result["error"]
    assert result["stdout"] == "a\ufffdb\n"
    [table] = result["tables"]
    assert (table["columns"], table["rows"]) == (["name\ufffd"], [["x\ufffdy"]])
    assert SHOWN_WITHOUT_NUL in result["notes"]
    assert {e["name"]: e.get("value") for e in result["workspace"]}["kept"] == "k\x00"
    shown = {k: v for k, v in result.items() if k != "workspace"}
    assert "\\u0000" not in json.dumps(shown)
    failed = backend.run(job("raise ValueError('bad \\x00 value')"))
    assert failed["error"]["message"] == "bad \ufffd value"


def test_printed_output_is_bounded(backend: ProcessBackend) -> None:
    result = backend.run(
        {
            "code": "for i in range(200000):\n    print('x' * 100)",
            "limits": {"max_output_bytes": 1 << 20},
        }
    )
    assert result["ok"] is True
    assert len(result["stdout"]) < 300_000
    assert "[output truncated" in result["stdout"]


def test_a_result_over_the_output_cap_is_cut_not_returned_whole(backend: ProcessBackend) -> None:
    code = "import pandas as pd\nbig = pd.DataFrame({'x': range(2_000_000)})\nbig"
    result = backend.run({"code": code, "limits": {"max_output_bytes": 200_000}})
    assert len(json.dumps(result)) < 400_000
    assert result["workspace"] == []
    assert any("left out" in note or "not kept" in note for note in result["notes"])


def test_a_memory_bomb_ends_with_a_memory_error(backend: ProcessBackend) -> None:
    result = backend.run({"code": "x = [0] * (10 ** 9)", "limits": {"memory_mb": 256}})
    assert result["ok"] is False
    assert result["error"]["type"] in {"MemoryError", "SandboxCrashed"}


def test_a_crashed_sandbox_is_reported_and_the_pool_carries_on(backend: ProcessBackend) -> None:
    outcome: dict[str, Any] = {}

    def slow() -> None:
        outcome["result"] = backend.run(
            {"code": "while True:\n    pass", "limits": {"timeout_s": 30}}
        )

    runner = threading.Thread(target=slow)
    started = time.monotonic()
    runner.start()
    busy: list[int] = []
    seen: dict[int, int] = {}
    for _ in range(200):  # the child running this job, once its loop is burning CPU
        time.sleep(0.05)
        # Only the job's own child (the pool's others may be warming, and a warming child
        # burns CPU too), and only once it has run the loop for a while: its ticks at
        # hand-out include its warm-up, so count from when it was first seen running.
        for child in backend.running():
            seen.setdefault(child.pid, _cpu_ticks(child.pid))
        busy = [pid for pid, at in seen.items() if _cpu_ticks(pid) - at > 20]
        if busy:
            break
    assert busy
    for pid in busy:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    runner.join(10)
    assert time.monotonic() - started < 10
    assert outcome["result"]["error"]["type"] == "SandboxCrashed"
    assert backend.run(job("1 + 1"))["result"] == "2"


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def test_a_dead_pool_is_restarted(census: dict[str, Path]) -> None:
    with ProcessBackend(ProcessConfig(warm=True, pool_size=1)) as backend:
        assert backend.run(job("1"))["ok"]
        assert backend._zygote is not None
        os.killpg(backend._zygote.pid, signal.SIGKILL)
        backend._zygote.wait()
        result = backend.run(job("2 + 2"))
        assert result["result"] == "4"


def test_closing_the_backend_leaves_no_process_behind() -> None:
    backend = ProcessBackend(ProcessConfig(warm=True, pool_size=2, uid_base=OWN_UID_BASE))
    assert backend.run(job("1"))["ok"]
    assert backend._zygote is not None
    zygote = backend._zygote.pid
    backend.close()
    time.sleep(0.5)
    assert not Path(f"/proc/{zygote}").exists() or "Z" in Path(f"/proc/{zygote}/stat").read_text()
    assert sandbox_processes(range(OWN_UID_BASE, OWN_UID_BASE + 1000)) == []


def test_concurrent_jobs_each_get_their_own_sandbox(backend: ProcessBackend) -> None:
    results: list[dict[str, Any]] = []

    def run(n: int) -> None:
        results.append(backend.run(job(f"import os as x\n{n}" if n < 0 else f"{n} * 2")))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r["result"] for r in results) == ["0", "2", "4", "6"]


def test_cold_mode_runs_the_same_job(census: dict[str, Path]) -> None:
    dataset = {"name": "df", "path": str(census["parquet"]), "format": "parquet"}
    with ProcessBackend(ProcessConfig(warm=False)) as cold:
        result = cold.run(job("df.groupby('education')['income'].mean()", datasets=[dataset]))
        assert cold.health()["mode"] == "cold"
    assert result["ok"], result["error"]
    [table] = result["tables"]
    assert table["columns"] == ["education", "income"]
    assert {row[0]: row[1] for row in table["rows"]} == {
        "BS": 50000.0,
        "HS": 30000.0,
        "MS": 70000.0,
        "PhD": 95000.0,
    }


def test_health_says_how_snippets_are_isolated(backend: ProcessBackend) -> None:
    health = backend.health()
    assert health["backend"] == "process"
    assert health["isolation"] == "namespaces"
    assert health["mode"] == "warm"


def test_without_isolation_the_backend_refuses_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A machine without the isolation primitives is simulated by asking the probe to bind
    a path that does not exist (the kernel's refusal itself cannot be produced here)."""
    monkeypatch.setattr(isolation, "default_read_only_paths", lambda: ["/nonexistent-quarry-path"])
    with pytest.raises(SandboxUnavailable, match="cannot isolate snippets here"):
        ProcessBackend(ProcessConfig(warm=False))
    with pytest.warns(UserWarning, match="SANDBOX ISOLATION IS WEAK"):
        weak = ProcessBackend(ProcessConfig(warm=False, allow_weak_isolation=True))
    with weak:
        assert weak.health()["isolation"] == "weak"
        assert weak.run(job("1 + 1"))["result"] == "2"


def test_a_job_naming_a_missing_file_is_refused_without_a_sandbox(
    backend: ProcessBackend, tmp_path: Path
) -> None:
    dataset = {"name": "df", "path": str(tmp_path / "gone.arrow"), "format": "arrow"}
    result = backend.run(job("len(df)", datasets=[dataset]))
    assert result["ok"] is False
    assert result["error"]["type"] == "JobError"
    assert "gone.arrow" in result["error"]["message"]
    assert backend.run(job("1 + 1"))["result"] == "2"


def test_a_job_too_big_for_the_wire_is_refused(backend: ProcessBackend) -> None:
    result = backend.run(job("x = '" + "a" * (17 << 20) + "'"))
    assert result["error"]["type"] == "JobError"
    assert "keep big data in datasets" in result["error"]["message"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"code": 1}, "`code` must be a string."),
        ({"code": "1", "datasets": None}, "`datasets` must be a list."),
        ({"code": "1", "datasets": [{"name": "_df", "path": "/x"}]}, "'_df' in `datasets`"),
        ({"code": "1", "limits": {"timeout_s": -1}}, "`limits` must map names"),
    ],
)
def test_a_malformed_job_is_a_job_error_not_a_crash(
    backend: ProcessBackend, bad: dict[str, Any], message: str
) -> None:
    result = backend.run(bad)
    assert result["ok"] is False
    assert result["error"]["type"] == "JobError"
    assert message in result["error"]["message"]


def test_isolation_works_in_a_process_whose_arrow_started_its_threads() -> None:
    """A sandbox made outside the zygote forks once more to be PID 1 of its namespace.
    Arrow's fork handler uses a pipe of its own: descriptors are closed only after that
    fork (closing them first made the second fork abort)."""
    import io

    import pyarrow.csv as pacsv

    pacsv.read_csv(io.BytesIO(b"a,b\n1,2\n"))  # starts Arrow's thread pool and its pipe
    plan = isolation.Plan(read_only=isolation.default_read_only_paths(), uid=OWN_UID_BASE + 999)
    plan.gid = plan.uid
    assert isolation.probe(plan) is None


def test_terminate_stops_a_running_snippet_and_the_pool_carries_on(
    backend: ProcessBackend,
) -> None:
    """A user stops a run: the snippet's process group is killed at once and its run()
    says Cancelled (not a crash); the next snippet gets a fresh sandbox as usual."""
    outcome: dict[str, Any] = {}

    def slow() -> None:
        outcome["result"] = backend.run(
            {"code": "while True:\n    pass", "limits": {"timeout_s": 30}}
        )

    runner = threading.Thread(target=slow)
    runner.start()
    for _ in range(200):  # until the job is handed to its sandbox
        if backend.running():
            break
        time.sleep(0.01)
    time.sleep(0.2)
    started = time.monotonic()
    assert backend.terminate() == 1
    runner.join(10)
    assert time.monotonic() - started < 5  # not the 30 s deadline
    assert outcome["result"]["error"]["type"] == "Cancelled"
    assert backend.terminate() == 0
    assert backend.run(job("6 * 7"))["result"] == "42"


def test_backends_on_one_host_lease_uid_blocks_of_their_own(tmp_path: Path) -> None:
    """Two worker processes must never run sandboxes as the same uid (the kernel counts
    processes per uid): each takes a block under a lock, and a closed one frees it."""
    first, held = lease_uid_block(70000, str(tmp_path))
    second, other = lease_uid_block(70000, str(tmp_path))
    assert (first, second) == (70000, 70000 + UID_BLOCK)
    held.close()
    again, third = lease_uid_block(70000, str(tmp_path))
    assert again == 70000
    for handle in (other, third):
        handle.close()


@pytest.mark.skipif(os.getuid() != 0, reason="sandbox uids are assigned only when root")
def test_two_backends_with_the_same_base_run_as_different_uids() -> None:
    one = ProcessBackend(ProcessConfig(warm=True, pool_size=1, uid_base=65500))
    two = ProcessBackend(ProcessConfig(warm=True, pool_size=1, uid_base=65500))
    try:
        assert one.run(job("1"))["ok"]
        assert two.run(job("1"))["ok"]
        assert {one._uid_start, two._uid_start} == {65500, 65500 + UID_BLOCK}
    finally:
        one.close()
        two.close()
