"""Resource attacks: each ends with a clear error within its limit, and leaves nothing
running on the host. What the language layer cannot stop (one long C call, a snippet
that swallows the timeout) is stopped by the backend's kill at the deadline."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.security.conftest import (
    Sandbox,
    cli,
    pool_children,
    refused,
    suite_sandbox_processes,
)

LONG_RUNNING = [
    ("infinite-loop", "while True:\n    pass"),
    ("huge-power-in-c", "10**10**10"),
    ("huge-factorial-in-c", "import math\nmath.factorial(10**8)"),
    ("regex-backtracking-in-c", "import re\nre.match('(a+)+$', 'a' * 64 + 'b')"),
    ("numpy-busy-loop", "import numpy as np\nwhile True:\n    np.linalg.inv(np.eye(50))"),
]

MEMORY_BOMBS = [
    ("nested-lists", "x = [list(range(10000)) for _ in range(10000)]"),
    ("bigger-nested-lists", "x = [list(range(100000)) for _ in range(100000)]"),
    ("bytearray", "x = bytearray(10**10)"),
    ("string", "x = 'x' * 10**10"),
    ("list-of-zeros", "x = [0] * 10**9"),
    ("numpy-ones", "import numpy as np\nx = np.ones((10**5, 10**5))"),
    ("pandas-frame", "import pandas as pd\nx = pd.DataFrame(index=range(10**9), columns=['a'])"),
]


@pytest.mark.slow
@pytest.mark.parametrize("code", [c[1] for c in LONG_RUNNING], ids=[c[0] for c in LONG_RUNNING])
def test_long_running_code_stops_at_the_deadline(sandbox: Sandbox, code: str) -> None:
    started = time.monotonic()
    result = sandbox.run(code, timeout_s=2)
    refused(result, "TimeoutError", "The snippet ran longer than 2 s")
    assert time.monotonic() - started < 8
    assert suite_sandbox_processes(sandbox.backend) == []


@pytest.mark.slow
def test_a_snippet_that_swallows_the_timeout_is_killed(sandbox: Sandbox) -> None:
    """The runner's own timer raises inside the snippet; catching it (and everything else)
    does not help: the backend kills the process group at the deadline."""
    code = (
        "while True:\n"
        "    try:\n"
        "        while True:\n"
        "            pass\n"
        "    except BaseException:\n"
        "        pass"
    )
    started = time.monotonic()
    result = sandbox.run(code, timeout_s=2)
    refused(result, "TimeoutError", "ran longer than 2 s and was stopped")
    assert time.monotonic() - started < 8
    time.sleep(0.3)
    assert suite_sandbox_processes(sandbox.backend) == []


@pytest.mark.parametrize("code", [c[1] for c in MEMORY_BOMBS], ids=[c[0] for c in MEMORY_BOMBS])
def test_a_memory_bomb_ends_with_a_memory_error(sandbox: Sandbox, code: str) -> None:
    result = sandbox.run(code, memory_mb=256)
    refused(result, "MemoryError", "needed more than the 256 MB it may use")
    assert sandbox.run("1 + 1")["result"] == "2"  # the pool carries on


def test_unbounded_recursion_ends_with_a_recursion_error(sandbox: Sandbox) -> None:
    refused(
        sandbox.run("def f(n):\n    return f(n + 1)\nf(0)"),
        "RecursionError",
        "maximum recursion depth exceeded",
    )
    nested = "x = []\nfor i in range(10**5):\n    x = [x]\nrepr(x)"
    refused(sandbox.run(nested), "RecursionError", "maximum recursion depth exceeded")


def test_a_flood_of_printed_output_is_truncated(sandbox: Sandbox) -> None:
    cap = 1 << 20
    # 20 MB printed against a cap of 1 MB
    result = sandbox.run("for i in range(2 * 10**5):\n    print('x' * 100)", max_output_bytes=cap)
    assert result["ok"] is True, result["error"]
    assert "[output truncated:" in result["stdout"]
    assert len(result["stdout"]) <= cap // 4 + 100
    assert len(json.dumps(result)) <= cap


def test_huge_values_come_back_capped(sandbox: Sandbox) -> None:
    cap = 1 << 20
    result = sandbox.run("'x' * (50 * 2**20)", max_output_bytes=cap)
    assert result["ok"] is True
    assert len(result["result"]) <= 10_001
    code = "import pandas as pd\nimport numpy as np\npd.DataFrame(np.zeros((10**6, 3)))"
    result = sandbox.run(code, max_output_bytes=cap)
    (table,) = result["tables"]
    assert (len(table["rows"]), table["truncated"], table["total_rows"]) == (200, True, 10**6)
    code = "import pandas as pd\nbig = pd.DataFrame({'s': ['y' * 900] * 200000})"
    result = sandbox.run(code, max_output_bytes=cap)
    assert result["workspace"] == []
    assert any(note.startswith("big is not kept for the next snippet") for note in result["notes"])
    for found in (result, sandbox.run(code.replace("big =", "display(") + ")")):
        assert len(json.dumps(found)) <= cap


def test_many_large_tables_are_dropped_to_fit_the_cap(sandbox: Sandbox) -> None:
    cap = 1 << 20
    code = (
        "import pandas as pd\n"
        "for i in range(8):\n"
        "    display(pd.DataFrame({f'c{j}': ['w' * 900] * 200 for j in range(5)}))"
    )
    result = sandbox.run(code, max_output_bytes=cap)
    assert result["ok"] is True
    assert len(json.dumps(result)) <= cap
    assert any("tables were left out" in note for note in result["notes"])


def test_output_is_bounded_through_the_cli_cold() -> None:
    cap = 256 << 10
    result = cli("for i in range(10**5):\n    print('y' * 100)", max_output_bytes=cap)
    assert "[output truncated:" in result["stdout"]
    assert len(json.dumps(result)) <= cap


FILLING_THE_DISK = [
    (
        "numpy-save-work-dir",
        "import numpy as np\nnp.save('big.npy', np.zeros(10**8))",
        "numpy.save",
    ),
    (
        "to-parquet-tmp",
        "import pandas as pd\npd.DataFrame({'a': range(10**7)}).to_parquet('/tmp/big.parquet')",
        "to_parquet() cannot write files",
    ),
    (
        "scipy-save-npz-loop",
        "import scipy.sparse as sp\nimport numpy as np\n"
        "for i in range(1000):\n    sp.save_npz(f'/tmp/f{i}.npz', sp.random(1000, 1000, 0.5))",
        "Writing files is not available",
    ),
]


@pytest.mark.parametrize(
    ("code", "fragment"), [f[1:] for f in FILLING_THE_DISK], ids=[f[0] for f in FILLING_THE_DISK]
)
def test_filling_the_disk_is_refused_and_the_host_disk_is_untouched(
    sandbox: Sandbox, code: str, fragment: str
) -> None:
    before = shutil.disk_usage("/tmp").used
    refused(sandbox.run(code, timeout_s=20), "PolicyError", fragment)
    assert shutil.disk_usage("/tmp").used - before < 50 << 20  # other work on the machine


def test_the_pool_children_carry_their_limits(sandbox: Sandbox) -> None:
    """Read from the host: every waiting sandbox process runs with the OS limits a snippet
    could otherwise exhaust (processes for a fork bomb, files, file size, core dumps), as
    its own unprivileged uid, with no way back to privileges."""
    sandbox.run("1")
    children = pool_children(sandbox.backend)
    assert children
    for pid in children:
        limits = Path(f"/proc/{pid}/limits").read_text()
        rows = {line[:26].strip(): line[26:].split()[:2] for line in limits.splitlines()[1:]}
        assert rows["Max processes"] == ["32", "32"]
        assert rows["Max open files"] == ["256", "256"]
        assert rows["Max file size"] == [str(64 << 20), str(64 << 20)]
        assert rows["Max core file size"] == ["0", "0"]
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = int(fields["Uid"].split()[0])
        assert 63000 <= uid < 64000
        assert fields["Uid"].split() == [str(uid)] * 4
        assert fields["NoNewPrivs"].strip() == "1"
        assert fields["CapEff"].strip() == "0000000000000000"
