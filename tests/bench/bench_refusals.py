"""False-refusal benchmark of the sandbox's language layer (runner/policy/).

Legitimate code should run in the sandbox; a refusal of it is a false refusal. Here the
legitimate code is what the libraries document: the `>>>` examples in the docstrings of the
installed pandas, numpy, scipy.stats, scikit-learn and plotly (express, graph_objects,
subplots, figure_factory, colors), found by walking each public namespace (each docstring
once, under the first name reaching it) and parsed with doctest.DocTestParser. A
docstring's examples, joined in order after the imports the libraries' own doctest runs
provide (numpy as np, pandas as pd), are one snippet, run in-process by `runner.main.run`
(timeout 10 s); expected output is not compared. Dropped first, counted by reason: files
and paths, network, matplotlib, GUI (`fig.show()`, widgets), IPython, `+SKIP`, modules not
installed, text that is not Python, and examples expecting an exception (they would end
the snippet early).

"refused": a PolicyError or SandboxRefusal; any error saying "not available in the
sandbox"; an ImportError, NameError, AttributeError or SyntaxError saying "is an invalid
attribute name", "private" or "not allowed"; a NameError for a name Python's builtins
have. Otherwise it "ran": ok, an ordinary error, a timeout, or killed by the watchdog. An
ordinary error ends a snippet early: "reached" counts the examples up to it.

Some documented examples do what the sandbox keeps out on purpose (docs/SECURITY.md): raw
memory and addresses, library internals, code from strings, pickling, class factories,
changing pandas' classes, files. Such a refusal is "by design" (`BY_DESIGN`, matched on
its message, each listed in the report); any other is a false refusal. The false-refusal
rate is false refusals over docstrings run (target <= 0.5 %); the rate of all refusals is
printed beside it.

Snippets run in `--jobs` worker subprocesses (in a scratch directory), a fresh one for each
run of `--recycle` consecutive snippets, behind a watchdog: a hanging or crashing example
is recorded and the benchmark goes on. Order and output are deterministic (sorted by
library and name; what a worker ran before a snippet does not depend on scheduling).

    python -m tests.bench.bench_refusals [--limit N] [--json PATH] [--jobs 2] [--recycle 100]

`--limit N` runs the first N docstrings of each library; `--json` writes every run and
every refused case (name, code, error).
"""

from __future__ import annotations

import argparse
import ast
import builtins
import contextlib
import doctest
import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import queue
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LIMITS = {"timeout_s": 10, "memory_mb": 1024, "max_output_bytes": 1 << 20}
PREAMBLE = "import numpy as np\nimport pandas as pd\n"
WATCHDOG_S, STARTUP_S = 60.0, 180.0  # one snippet and its result; a worker's start
_PLOTLY = "plotly.express plotly.graph_objects plotly.subplots plotly.figure_factory plotly.colors"
# library -> (the package its objects come from, the modules walked)
LIBRARIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "pandas": ("pandas", ("pandas",)),
    "numpy": ("numpy", ("numpy",)),
    "scipy.stats": ("scipy.stats", ("scipy.stats",)),
    "scikit-learn": ("sklearn", ("sklearn",)),
    "plotly": ("plotly", tuple(_PLOTLY.split())),
}
# Modules not walked: internals, I/O, plotting, test and build tooling.
_SKIPPED = """pandas.core pandas.io pandas.util pandas.compat pandas.plotting pandas.testing
numpy.core numpy.testing numpy.typing numpy.f2py numpy.distutils numpy.ctypeslib numpy.matlib
numpy.lib.format numpy.lib.npyio sklearn.externals sklearn.utils.estimator_checks"""
SKIPPED_MODULES = tuple(_SKIPPED.split())
_PRIVATE_PART = re.compile(r"^(_.*|tests?|testing|conftest)$")
_WRITER = r"to_(csv|excel|parquet|feather|hdf|pickle|json|stata|orc|html|latex|xml|markdown)"
_PATHLIKE = r"""(f?["']|[\w.]*(path|file|fname|url|dir|buf)\w*\s*[,)])"""
DROP_RULES = {
    "IPython/display": r"IPython|get_ipython|\bdisplay\(|_repr_\w+_|^\s*[%!]",
    "files/paths": rf"\bopen\(|\bread_\w+\(\s*{_PATHLIKE}|\.{_WRITER}\(\s*{_PATHLIKE}"
    r"|\bwrite_\w+\(|\b(np|numpy)\.(load|save)|\bmemmap\b|\.tofile\(|\bfromfile\(|tempfile"
    r"|\bos\b|pathlib|\bPath\(|/tmp|\.csv|\.xlsx?|\.parquet|\.h5|\.hdf|\.pkl|\.npz|\.npy"
    r"|\.feather|clipboard|sqlite|sqlalchemy|to_sql|read_sql|\bglob\b|\bstata\b|StataReader"
    r"|data_home|load_files|svmlight|check_memory",
    "network": r"https?:|s3://|gcs?://|ftp://|urlopen|\bfetch_\w+|requests\.",
    "matplotlib/plot": r"matplotlib|pyplot|\bplt\b|\.plot\b|\bplot\(|\w+Display\b|\.hist\("
    r"|boxplot\(|scatter_matrix|andrews_curves|parallel_coordinates|lag_plot|bootstrap_plot"
    r"|autocorrelation_plot|radviz|plot_tree|\bax(s|es)?\d*\b|add_subplot|add_axes|suptitle"
    r"|tight_layout|savefig|\bcolorbar\b|\bcm\.",
    "GUI": r"\.show\(|webbrowser|tkinter|ipywidgets|FigureWidget|plotly\.callbacks"
    r"|\.on_(click|hover|unhover|selection|deselect|change)\(",
}
_DROP = [(reason, re.compile(pattern)) for reason, pattern in DROP_RULES.items()]


@dataclass
class Case:
    library: str
    name: str
    code: str  # the preamble included
    starts: list[int]  # the first line of each example in `code`


def _public_module(name: str, roots: tuple[str, ...]) -> bool:
    return (
        any(name == root or name.startswith(root + ".") for root in roots)
        and not any(_PRIVATE_PART.match(part) for part in name.split("."))
        and not any(name == s or name.startswith(s + ".") for s in SKIPPED_MODULES)
    )


def _home(obj: object) -> str:
    """The module an object comes from (a property's getter's, a method's class's)."""
    for part in (obj, getattr(obj, "fget", None), getattr(obj, "__objclass__", None)):
        module = getattr(part, "__module__", None) if part is not None else None
        if isinstance(module, str):
            return module
    return type(obj).__module__


def _members(obj: object) -> list[tuple[str, object]]:
    found = []
    for name in sorted(n for n in dir(obj) if not n.startswith("_")):
        with contextlib.suppress(Exception):  # a lazy attribute that cannot load
            found.append((name, getattr(obj, name)))
    return found


def docstrings(package: str, roots: tuple[str, ...]) -> dict[str, str]:
    """Docstring with examples -> the first qualified name reaching it (breadth first),
    preferring the class that defines a method to those inheriting it."""
    own: dict[str, str] = {}
    inherited: dict[str, str] = {}
    seen: set[int] = set()
    todo: deque[tuple[str, object, int]] = deque()
    for root in roots:
        module = importlib.import_module(root)
        for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
            if _public_module(f"{root}.{info.name}", roots):
                with contextlib.suppress(Exception):  # an optional dependency is missing
                    importlib.import_module(f"{root}.{info.name}")
        seen.add(id(module))
        todo.append((root, module, 0))
    while todo:
        path, obj, depth = todo.popleft()
        for name, value in _members(obj):
            if inspect.ismodule(value):
                if id(value) not in seen and _public_module(value.__name__, roots):
                    seen.add(id(value))
                    todo.append((value.__name__, value, 0))
                continue
            if not _home(value).startswith(package):
                continue
            doc = getattr(value, "__doc__", None)
            if isinstance(doc, str) and ">>>" in doc:
                defined_here = not inspect.isclass(obj) or name in vars(obj)
                (own if defined_here else inherited).setdefault(doc, f"{path}.{name}")
            if inspect.isclass(value) and depth < 2 and id(value) not in seen:
                seen.add(id(value))
                todo.append((f"{path}.{name}", value, depth + 1))
    return {**inherited, **own}


def _missing_module(tree: ast.AST) -> bool:
    nodes = list(ast.walk(tree))
    names = [a.name for n in nodes if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in nodes if isinstance(n, ast.ImportFrom) and n.module and not n.level]
    return any(importlib.util.find_spec(name.split(".")[0]) is None for name in names)


def drop_reason(example: doctest.Example) -> str | None:
    if example.options.get(doctest.SKIP):
        return "+SKIP directive"
    for reason, pattern in _DROP:
        if pattern.search(example.source):
            return reason
    try:
        tree = ast.parse(example.source)
    except SyntaxError:
        return "not Python"
    if _missing_module(tree):
        return "module not installed"
    return "expects an exception" if example.exc_msg is not None else None


def collect(limit: int | None, dropped: Counter[tuple[str, str]]) -> list[Case]:
    parser = doctest.DocTestParser()
    cases: list[Case] = []
    done: set[str] = set()
    for library, (package, roots) in LIBRARIES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = docstrings(package, roots)
        chosen: list[Case] = []
        for doc, name in sorted(found.items(), key=lambda item: item[1]):
            if doc in done or (limit is not None and len(chosen) >= limit):
                continue
            done.add(doc)
            try:
                examples = parser.get_examples(doc, name)
            except ValueError:
                dropped[("docstring doctest cannot parse (whole docstrings)", library)] += 1
                continue
            code, starts = PREAMBLE, []
            for example in examples:
                reason = drop_reason(example)
                if reason is not None:
                    dropped[(reason, library)] += 1
                else:
                    starts.append(code.count("\n") + 1)
                    code += example.source
            if starts:
                chosen.append(Case(library, name, code, starts))
        cases.extend(chosen)
    return cases


def is_refusal(error: dict[str, Any] | None) -> bool:
    if not error:
        return False
    kind, message = str(error.get("type")), str(error.get("message"))
    if kind in ("PolicyError", "SandboxRefusal") or "not available in the sandbox" in message:
        return True
    words = ("is an invalid attribute name", "private", "not allowed")
    kinds = ("ImportError", "ModuleNotFoundError", "NameError", "AttributeError", "SyntaxError")
    if kind in kinds and any(word in message for word in words):
        return True
    match = re.match(r"name '(\w+)' is not defined", message)
    return kind == "NameError" and match is not None and hasattr(builtins, match.group(1))


# (reason, pattern on "<type>: <message>") of the refusals the policy makes on purpose.
BY_DESIGN: list[tuple[str, re.Pattern[str]]] = [
    (reason, re.compile(pattern))
    for reason, pattern in (
        (
            "raw memory or addresses",
            r"as_strided|byte_bounds|memoryview|Module 'ctypes'|__dataframe__|getbuffer",
        ),
        (
            "library internals (private names and modules)",
            r"names starting with \"_\" are private|belongs to [\w.]+ \(its code uses it\)"
            r"|Module '(pandas\.core|[\w.]*\._)|from sklearn\.externals\.",
        ),
        (
            "code from strings",
            r"globals\(\) is not available|pandas\.eval is not"
            r"|(eval|query)\(\) accepts plain column expressions|timeit runs functions only",
        ),
        ("pickling", r"Module 'pickle'"),
        ("class factories", r"Module 'dataclasses'"),
        ("changing pandas' classes", r"it changes pandas' classes"),
        ("files", r"reads files|cannot write files|writes files|touches files|ExcelWriter"),
    )
]


def by_design(error: dict[str, Any]) -> str | None:
    text = f"{error.get('type')}: {error.get('message')}"
    return next((reason for reason, pattern in BY_DESIGN if pattern.search(text)), None)


def worker() -> int:
    """`--worker`: a JSON job per line in, a JSON result per line out, on the original
    descriptors; what libraries write to descriptors 0 and 1 goes to /dev/null."""
    channel_in = os.fdopen(os.dup(0), "r", encoding="utf-8")
    channel_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    for fd in (0, 1):
        os.dup2(os.open(os.devnull, os.O_RDWR), fd)
    with contextlib.suppress(ValueError, OSError):  # a runaway allocation fails, not the host
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    from runner import main

    main.prepare(warm=False)
    print("ready", file=channel_out, flush=True)
    for line in channel_in:
        job = {"code": json.loads(line)["code"], "limits": LIMITS}
        try:
            result = json.loads(main.run(job))
            reply = {"ok": result["ok"], "error": result["error"]}
        except Exception as exc:  # the runner itself failed: recorded, not fatal
            reply = {"ok": False, "error": {"type": "RunnerCrash", "message": repr(exc)}}
        print(json.dumps(reply), file=channel_out, flush=True)
    return 0


class Worker:
    """A `--worker` subprocess; a thread reads its replies, so waiting for one can time out."""

    def __init__(self, workdir: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "tests.bench.bench_refusals", "--worker"]
        pipe, null = subprocess.PIPE, subprocess.DEVNULL
        self.proc = subprocess.Popen(
            command, cwd=workdir, env=env, stdin=pipe, stdout=pipe, stderr=null, text=True
        )
        assert self.proc.stdin is not None
        self.stdin = self.proc.stdin
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.ready = self._next(STARTUP_S) == "ready\n"

    def _read(self) -> None:
        for line in self.proc.stdout or ():
            self.lines.put(line)
        self.lines.put("")  # the end: it exited or crashed

    def _next(self, timeout: float) -> str | None:
        """A line; "" when the worker has exited, None when the wait timed out."""
        with contextlib.suppress(queue.Empty):
            return self.lines.get(timeout=timeout)
        return None

    def run(self, code: str) -> dict[str, Any]:
        with contextlib.suppress(OSError):
            self.stdin.write(json.dumps({"code": code}) + "\n")
            self.stdin.flush()
        line = self._next(WATCHDOG_S) if self.ready else ""
        if not line:
            self.proc.kill()  # hung, or already dead
            self.proc.wait()
            why = "did not start" if not self.ready else "died" if line == "" else "hung"
            message = f"the worker {why} (watchdog {WATCHDOG_S:.0f} s, exit {self.proc.returncode})"
            return {"ok": False, "error": {"type": "WorkerKilled", "message": message}}
        reply: dict[str, Any] = json.loads(line)
        return reply

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_all(cases: list[Case], jobs: int, recycle: int) -> list[dict[str, Any]]:
    """Every case's reply, in order. Runs of `recycle` consecutive cases each get a fresh
    worker (another after a kill), so what a worker has run before is always the same."""
    replies: list[dict[str, Any]] = [{} for _ in cases]
    chunks, finished = deque(range(0, len(cases), recycle)), [0]
    lock, started = threading.Lock(), time.monotonic()

    def drive(workdir: str) -> None:
        while True:
            with lock:
                if not chunks:
                    return
                first = chunks.popleft()
            current: Worker | None = None
            for index in range(first, min(first + recycle, len(cases))):
                current = current or Worker(workdir)
                replies[index] = reply = current.run(cases[index].code)
                if outcome(reply) == "killed":
                    current = None
                with lock:
                    finished[0] += 1
                    if finished[0] % 100 == 0 or finished[0] == len(cases):
                        elapsed = time.monotonic() - started
                        print(f"  {finished[0]}/{len(cases)} in {elapsed:.0f} s", file=sys.stderr)
            if current is not None:
                current.stop()

    with tempfile.TemporaryDirectory(prefix="bench-refusals-") as workdir:  # their cwd
        threads = [threading.Thread(target=drive, args=(workdir,)) for _ in range(jobs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return replies


def outcome(reply: dict[str, Any]) -> str:
    error = reply.get("error")
    if is_refusal(error):
        return "refused"
    if reply.get("ok"):
        return "ok"
    return "killed" if error and error.get("type") == "WorkerKilled" else "error"


def reached(case: Case, reply: dict[str, Any]) -> int:
    """How many examples ran (the one that stopped the snippet included)."""
    line = (reply.get("error") or {}).get("line")
    if reply.get("ok"):
        return len(case.starts)
    return sum(start <= line for start in case.starts) if isinstance(line, int) else 0


def report(cases: list[Case], replies: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("docstrings", "examples", "reached", "ok", "error", "killed", "refused")
    table: dict[str, dict[str, Any]] = {
        lib: dict.fromkeys(keys, 0) for lib in [*LIBRARIES, "overall"]
    }
    groups: dict[str, list[str]] = {}
    designed: Counter[str] = Counter()
    refused, runs = [], []
    for case, reply in zip(cases, replies, strict=True):
        kind, error = outcome(reply), reply.get("error")
        for row in (table[case.library], table["overall"]):
            row["docstrings"] += 1
            row["examples"] += len(case.starts)
            row["reached"] += reached(case, reply)
            row[kind] += 1
        run = {"library": case.library, "name": case.name, "outcome": kind, "error": error}
        runs.append(run)
        if kind == "refused" and error:
            reason = by_design(error)
            designed[reason or "false refusal"] += 1
            refused.append({**run, "code": case.code, "by_design": reason})
            message = f"{error.get('type')}: {error.get('message')}"[:120]
            groups.setdefault(message, []).append(case.name)
    for row in table.values():
        row["rate_percent"] = round(100 * row["refused"] / max(1, row["docstrings"]), 2)
    print(f"\n{'library':<14}" + "".join(f"{key:>11}" for key in keys) + f"{'refused %':>11}")
    for library, row in table.items():
        cells = "".join(f"{row[key]:>11}" for key in keys)
        print(f"{library:<14}{cells}{row['rate_percent']:>10.2f}%")
    overall = table["overall"]["rate_percent"]
    total = table["overall"]["docstrings"]
    false = designed["false refusal"]
    false_rate = round(100 * false / max(1, total), 2)
    print(f"\nRefused: {sum(designed.values())} docstrings ({overall:.2f} %), by reason:")
    for reason, count in designed.most_common():
        print(f"  {count:>6}  {reason}")
    verdict = "met" if false_rate <= 0.5 else "NOT met"
    print(
        f"\nFalse-refusal rate: {false_rate:.2f} % of docstrings ({false} refused outside "
        f"BY_DESIGN; target <= 0.5 %: {verdict}); all refusals: {overall:.2f} %"
    )
    top = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))[:30]
    print(f"\nTop refusal messages ({len(groups)} distinct, first 120 characters):")
    for message, names in top:
        print(f"{len(names):>5}  {message}\n       e.g. {names[0]}")
    return {
        "libraries": table,
        "rate_percent": overall,
        "false_refusal_rate_percent": false_rate,
        "refused_by_reason": dict(designed),
        "top_messages": [{"message": m, "count": len(n), "example": n[0]} for m, n in top],
        "refused": refused,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_refusals")
    parser.add_argument("--limit", type=int, help="the first N docstrings of each library")
    parser.add_argument("--json", help="write the whole result, every refused case included")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--recycle", type=int, default=100, help="snippets per worker")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker()
    started = time.monotonic()
    dropped: Counter[tuple[str, str]] = Counter()
    cases = collect(args.limit, dropped)
    print(f"Collected {len(cases)} docstrings in {time.monotonic() - started:.0f} s.")
    print(f"Dropped {sum(dropped.values())} examples before running, by reason:")
    reasons: dict[str, dict[str, int]] = {}
    for (reason, library), count in sorted(dropped.items()):
        reasons.setdefault(reason, {})[library] = count
    for reason, per in reasons.items():
        detail = ", ".join(f"{library} {count}" for library, count in per.items())
        print(f"  {sum(per.values()):>6}  {reason} ({detail})")
    replies = run_all(cases, max(1, args.jobs), max(1, args.recycle))
    result = report(cases, replies)
    elapsed = time.monotonic() - started
    print(f"\nTook {elapsed:.0f} s.")
    if args.json:
        result.update(
            limits=LIMITS, preamble=PREAMBLE, dropped=reasons, elapsed_s=round(elapsed, 1)
        )
        result["command"] = ["python", "-m", "tests.bench.bench_refusals", *sys.argv[1:]]
        Path(args.json).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
