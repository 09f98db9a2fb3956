"""Starting processes: refused by every route, and no process appears on the host — not
even a joblib worker when scikit-learn is asked for `n_jobs=-1`."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.security.conftest import (
    Sandbox,
    cli,
    processes,
    refused,
    suite_sandbox_processes,
)

ROUTES = [
    (
        "dunder-import-os-system",
        "__import__('os').system('touch {path}')",
        "PolicyError",
        '"__import__" is an invalid variable name',
    ),
    ("import-os", "import os\nos.system('touch {path}')", "ImportError", "Module 'os'"),
    (
        "import-subprocess",
        "import subprocess\nsubprocess.run(['touch', '{path}'])",
        "ImportError",
        "Module 'subprocess'",
    ),
    (
        "os-system-via-plotly-data",
        "import plotly.data as d\nd.os.system('touch {path}')",
        "PolicyError",
        "Module 'os'",
    ),
    (
        "os-system-via-sklearn",
        "import sklearn\nsklearn.os.system('touch {path}')",
        "PolicyError",
        "Module 'os'",
    ),
    (
        "os-fork-via-from-import",
        "from plotly.express.data import os\nos.fork()",
        "PolicyError",
        "Module 'os'",
    ),
    (
        "subprocess-via-numpy-f2py",
        "import numpy as np\nnp.f2py.subprocess.run(['touch', '{path}'])",
        "PolicyError",
        "Module 'numpy.f2py'",
    ),
    (
        "numpy-f2py-compile",
        "import numpy as np\nnp.f2py.compile('x', 'y')",
        "PolicyError",
        "Module 'numpy.f2py'",
    ),
    (
        "subprocess-via-get-module",
        "import plotly.basedatatypes as b\nb.get_module('subprocess').run(['touch', '{path}'])",
        "PolicyError",
        "get_module (from _plotly_utils.optional_imports)",
    ),
    (
        "platform-popen-via-sklearn",
        "import sklearn.base as b\nb.platform.popen('touch {path}')",
        "PolicyError",
        "Module 'platform'",
    ),
    (
        "pandas-clipboard-runs-xclip",
        "import pandas as pd\npd.DataFrame({{'a': [1]}}).to_clipboard()",
        "PolicyError",
        "to_clipboard() writes files",
    ),
    (
        "pandas-io-clipboard-module",
        "import pandas as pd\npd.io.clipboard.clipboard_get()",
        "PolicyError",
        "Module 'pandas.io'",
    ),
    ("import-multiprocessing", "import multiprocessing", "ImportError", "Module 'multiprocessing'"),
    (
        "scipy-workers-multiprocessing-pool",
        "from scipy import optimize\nimport numpy as np\n"
        "optimize.differential_evolution(np.sum, [(-2, 2)], workers=2, maxiter=2)",
        "PolicyError",
        "Starting processes is not available in the sandbox (multiprocessing.SemLock)",
    ),
    (
        "joblib-via-sklearn",
        "import sklearn.utils.validation as v\nv.joblib.Parallel(n_jobs=2)",
        "PolicyError",
        "Module 'joblib'",
    ),
    (
        "private-multiprocessing-helper",
        "from scipy._lib._util import MapWrapper\nMapWrapper(2)",
        "ImportError",
        "Module 'scipy._lib._util'",
    ),
]


@pytest.mark.parametrize(
    ("code", "kind", "fragment"), [r[1:] for r in ROUTES], ids=[r[0] for r in ROUTES]
)
def test_starting_a_process_is_refused(
    sandbox: Sandbox, host_path: Path, code: str, kind: str, fragment: str
) -> None:
    result = sandbox.run(code.format(path=host_path))
    refused(result, kind, fragment)
    assert not host_path.exists()
    assert "HACKED" not in result["stdout"]


def test_the_hacked_echo_prints_nothing_through_the_cli_cold() -> None:
    result = cli("__import__('os').system('echo HACKED')")
    refused(result, "PolicyError", '"__import__" is an invalid variable name')
    assert "HACKED" not in result["stdout"]
    result = cli("import subprocess\nsubprocess.run(['echo', 'HACKED'])")
    refused(result, "ImportError", "Module 'subprocess'")


def test_n_jobs_minus_one_fits_without_starting_a_worker(sandbox: Sandbox) -> None:
    """joblib runs sequentially in the sandbox: a worker would get the real builtins and
    run the snippet's callbacks unrestricted. The fit works, and while it runs no process
    in the suite's sandbox uids has a sandbox process as its parent."""
    code = (
        "import numpy as np\n"
        "from sklearn.ensemble import RandomForestClassifier\n"
        "from sklearn.model_selection import cross_val_score\n"
        "rng = np.random.default_rng(0)\n"
        "X = rng.normal(size=(3000, 8))\n"
        "y = (X[:, 0] + X[:, 1] > 0).astype(int)\n"
        "model = RandomForestClassifier(n_estimators=150, n_jobs=-1, random_state=0)\n"
        "scores = cross_val_score(model, X, y, cv=3, n_jobs=-1)\n"
        "round(float(scores.mean()), 2) > 0.8, model.n_jobs"
    )
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            table = processes()
            for pid, (uid, parent) in table.items():
                if 63000 <= uid < 65000 and table.get(parent, (0, 0))[0] == uid:
                    seen.add(pid)  # a sandbox process whose parent is a sandbox process
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = sandbox.run(code, timeout_s=60)
    finally:
        done.set()
        watcher.join()
    assert result["error"] is None
    assert result["result"] == "(True, -1)"
    assert seen == set()


def test_no_sandbox_process_is_left_behind(sandbox: Sandbox) -> None:
    sandbox.run("1 + 1")
    time.sleep(0.3)
    assert suite_sandbox_processes(sandbox.backend) == []
