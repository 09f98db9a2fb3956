"""Run one job: `python -m runner` reads the job JSON on stdin and writes the result JSON on
stdout (the contract is in DESIGN.md). The process backend's warm children call `prepare`
once, before any job reaches them, and `run` for their one job."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from runner import capture, data, policy
from runner.job import (
    DEFAULT_LIMITS,
    REPLACED_SURROGATES,
    blank_result,
    job_problem,
    timeout_message,
    utf8_text,
)

_prepared = False
# What `--warm` writes on stderr once the libraries are loaded and it waits for its job.
READY_LINE = "quarry-runner: ready\n"


def prepare(warm: bool = True) -> None:
    """Import the libraries, build the policy and, with `warm`, run representative
    pandas/plotly/scikit-learn work once (plotly alone costs ~150 ms on first use)."""
    global _prepared
    if _prepared:
        return
    _sequential_joblib()
    _plain_numpy_scalars()
    policy.GUARD.ready()
    if warm:
        import numpy as np
        import pandas as pd
        import plotly.express as px
        import plotly.graph_objects as go

        frame = pd.DataFrame({"a": np.arange(200) % 7, "b": np.linspace(0, 1, 200)})
        frame.groupby("a")["b"].agg(["mean", "count"]).describe()
        for fig in (
            px.histogram(frame, x="b"),
            px.scatter(frame, x="a", y="b", color="a"),
            px.bar(frame.groupby("a", as_index=False)["b"].mean(), x="a", y="b"),
            px.line(frame, x="a", y="b"),
            px.box(frame, x="a", y="b"),
            go.Figure(go.Pie(labels=["x", "y"], values=[1, 2])),
        ):
            capture.figure_json(fig)
        capture.table("warm", frame)
        try:
            from sklearn.linear_model import LinearRegression
            from sklearn.model_selection import train_test_split

            x_train, x_test, y_train, y_test = train_test_split(frame[["a"]], frame["b"])
            LinearRegression().fit(x_train, y_train).score(x_test, y_test)
        except ImportError:  # pragma: no cover - scikit-learn is a runner dependency
            pass
        # scikit-learn finds the loaded BLAS/OpenMP libraries once; do it here, with the
        # system files it reads still in view
        from sklearn.utils.parallel import _get_threadpool_controller

        _get_threadpool_controller()
        policy.compile_snippet("x = df.groupby('a')['b'].mean()\nx")
        data.fingerprint(frame)
        policy.GUARD.ready()  # the rules of every library imported above
    # The sandbox has no /proc: threadpoolctl (scikit-learn's KMeans...) must list the
    # loaded libraries through the dynamic loader instead of /proc/self/maps.
    threadpoolctl = sys.modules.get("threadpoolctl")
    if threadpoolctl is not None:
        threadpoolctl._HAS_PROCFS = False  # type: ignore[attr-defined]
    _prepared = True


def _plain_numpy_scalars() -> None:
    """`(3, True)`, not `(np.int64(3), np.True_)`, in results and printed output (NumPy 2
    prints scalars with their type); arrays print as before."""
    import numpy as np

    np.set_printoptions(legacy="1.25")


def _sequential_joblib() -> None:
    """No worker processes or threads from scikit-learn's `n_jobs`: a restricted callback
    shipped to a joblib worker would run with real builtins."""
    try:
        import joblib

        joblib.parallel.parallel_config(backend="sequential").__enter__()
    except (ImportError, AttributeError):  # pragma: no cover
        pass


def _error(kind: str, message: str, line: int | None) -> dict[str, Any]:
    return {"type": kind, "message": message[:2000], "line": line}


def _snippet_line(tb: Any) -> int | None:
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if frame.f_code.co_filename == policy.SNIPPET_FILENAME:
            line = lineno
    return line


class _Timeout(BaseException):
    pass


def run(job: dict[str, Any]) -> str:
    """The result JSON (as text) for one job."""
    started = time.perf_counter()
    prepare(warm=False)
    limits = {**DEFAULT_LIMITS, **(job.get("limits") or {})}
    max_output = int(limits["max_output_bytes"])
    output = capture.Output(limit=max(1024, max_output // 4))
    figures = capture.Figures()
    figures.install()
    policy.WRITTEN.clear()

    shown: list[tuple[str, Any]] = []

    def display(*values: Any) -> None:
        for value in values:
            shown.append((f"display_{len(shown) + 1}", value))

    extra = {"_print_": capture.PrintFactory(output, policy.guarded_getattr), "display": display}
    builtins_ = data.Namespace(
        policy.make_builtins(extra), data.loaders(job), refused=policy.REFUSED_BUILTINS
    )
    namespace: dict[str, Any] = {"__builtins__": builtins_}

    result = blank_result()
    last: Any = None
    timeout = float(limits["timeout_s"])
    armed_at = time.perf_counter()
    try:
        _alarm(timeout)
        try:
            body, tail = policy.compile_snippet(job.get("code", ""))
            # what libraries write to sys.stdout themselves (df.info(), np.info(),
            # pd.describe_option()) is printed output too
            with contextlib.redirect_stdout(output):
                exec(body, namespace)  # noqa: S102 - restricted bytecode, guarded globals
                if tail is not None:
                    last = eval(tail, namespace)  # noqa: S307 - restricted bytecode
        finally:  # disarmed before anything below runs
            _disarm()
    except policy.CompileError as exc:
        result.update(ok=False, error=_error(exc.kind, exc.message, exc.line))
    except _Timeout:
        _disarm()  # it may have fired on the way into the `finally` above, before disarming
        ran = time.perf_counter() - armed_at
        result.update(ok=False, error=_error("TimeoutError", timeout_message(timeout, ran), None))
    except policy.PolicyError as exc:
        result.update(
            ok=False, error=_error("PolicyError", str(exc), _snippet_line(exc.__traceback__))
        )
    except MemoryError:
        result.update(
            ok=False,
            error=_error(
                "MemoryError",
                f"The snippet needed more than the {limits['memory_mb']} MB it may use.",
                None,
            ),
        )
    except BaseException as exc:  # the snippet's own error: report it, never the runner's
        result.update(
            ok=False,
            error=_error(type(exc).__name__, str(exc), _snippet_line(exc.__traceback__)),
        )

    figure_texts: list[str] = []
    _collect(result, namespace, builtins_, last, shown, figures, figure_texts, max_output)
    result["stdout"] = output.text()
    result["duration_ms"] = int((time.perf_counter() - started) * 1000)
    return _assemble(result, figure_texts, max_output)


def _collect(
    result: dict[str, Any],
    namespace: dict[str, Any],
    builtins_: data.Namespace,
    last: Any,
    shown: list[tuple[str, Any]],
    figures: capture.Figures,
    figure_texts: list[str],
    max_output: int,
) -> None:
    # Each part on its own: a value that cannot be shown must not lose the others.
    def attempt(what: str, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as exc:
            note = f"{what} could not be shown ({type(exc).__name__}: {exc})."
            result["notes"].append(note[:500])

    for name, value in shown + ([("result", last)] if last is not None else []):

        def add_table(name: str = name, value: Any = value) -> None:
            found = capture.table(name, value)
            if found is not None:
                result["tables"].append(found)

        attempt(f"The table {name}", add_table)
    if last is not None and not _displayed_elsewhere(last):

        def add_result() -> None:
            numpy = sys.modules.get("numpy")
            shown_value = last.item() if numpy and isinstance(last, numpy.generic) else last
            result["result"] = repr(shown_value)[: capture.MAX_RESULT_CHARS]

        attempt("The value of the last line", add_result)
    figs, notes = figures.collect()
    result["notes"].extend(notes)
    for number, fig in enumerate(figs, 1):

        def add_figure(fig: Any = fig) -> None:
            text, note = capture.figure_json(fig)
            figure_texts.append(text)
            if note:
                result["notes"].append(note)

        attempt(f"Figure {number}", add_figure)

    def keep_workspace() -> None:
        # Arrow travels as base64 (4/3 of its size): the workspace may take about half
        # of the result's cap, the rest is for what the snippet shows.
        budget = max_output * 3 // 8
        entries, notes = data.export(namespace, builtins_, {"display"}, budget)
        result["workspace"] = [{k: v for k, v in e.items() if k != "size"} for e in entries]
        result["notes"].extend(notes)

    attempt("The workspace", keep_workspace)


def _displayed_elsewhere(value: Any) -> bool:
    """DataFrames and Series become tables, figures become figures."""
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, pd.DataFrame | pd.Series):
        return True
    base = sys.modules.get("plotly.basedatatypes")
    return base is not None and isinstance(value, base.BaseFigure)


def _assemble(result: dict[str, Any], figure_texts: list[str], max_output: int) -> str:
    """The result JSON, kept under `max_output` bytes: figures, then tables are dropped,
    printed output and the result shortened, and the workspace dropped last (each with a
    note) until it fits."""
    _valid_unicode(result, figure_texts)
    # The workspace last: it is what the next snippet builds on.
    for drop in ("figures", "tables", "stdout", "result", "workspace", None):
        head = capture.dumps({k: v for k, v in result.items() if k != "figures"})
        figures = "[" + ",".join(figure_texts) + "]"
        text = head[:-1] + ',"figures":' + figures + "}"
        if len(text.encode()) <= max_output:
            return text
        present = False
        if drop == "figures":
            present = bool(figure_texts)
            figure_texts.clear()
        elif drop in ("stdout", "result"):
            present = len(result.get(drop) or "") > max_output // 8
            if present:
                result[drop] = result[drop][: max_output // 8]
        elif drop is not None:
            present = bool(result[drop])
            result[drop] = []
        if present:
            what = (
                f"{drop} was shortened" if drop in ("stdout", "result") else f"{drop} were left out"
            )
            result["notes"].append(f"The output was over {max_output} bytes: {what}.")
    # Still over (a cap smaller than the error and notes): the essentials only.
    error = result.get("error")
    if error:
        error = {**error, "message": error["message"][: max_output // 4]}
    essentials = blank_result(error, result.get("duration_ms", 0))
    essentials["notes"] = [f"The output was over {max_output} bytes and was left out."]
    return capture.dumps(essentials)


def _valid_unicode(result: dict[str, Any], figure_texts: list[str]) -> None:
    """Text UTF-8 can carry, with a note when some had to change: a lone surrogate in
    printed output, a value or a table cell would make the result impossible to send (the
    sandbox's socket and stdout carry UTF-8), and the snippet would seem to have crashed."""
    head, replaced = utf8_text(capture.dumps({k: v for k, v in result.items() if k != "figures"}))
    for index, text in enumerate(figure_texts):
        figure_texts[index], changed = utf8_text(text)
        replaced = replaced or changed
    if replaced:
        result.update(json.loads(head))
        result["notes"].append(REPLACED_SURROGATES)


_ARMED = [False]


def _disarm() -> None:
    """Off first, then the timer: from the first statement on, a tick already on its way
    raises nothing, wherever it lands."""
    _ARMED[0] = False
    with contextlib.suppress(ValueError, OSError):  # not the main thread, or no SIGALRM
        signal.setitimer(signal.ITIMER_REAL, 0)


def _alarm(timeout: float) -> None:
    """A soft timeout inside the process, at the limit itself, so a Python loop ends with
    a clear error and what it printed; the backend kills the process a moment later (it
    also stops long C calls and snippets that swallow this one)."""

    def expired(_signum: int, _frame: Any) -> None:
        if _ARMED[0]:
            raise _Timeout

    _ARMED[0] = True
    try:
        signal.signal(signal.SIGALRM, expired)
        # again every half second: one raised where it cannot propagate (inside a
        # tracer, a destructor, a callback that swallows it) is not the last
        signal.setitimer(signal.ITIMER_REAL, max(0.1, timeout), 0.5)
    except (ValueError, OSError):  # not the main thread, or no SIGALRM on this platform
        pass


def main(argv: list[str] | None = None) -> int:
    """`python -m runner [--job-file PATH]`: the job from stdin, or from a file (the
    kubernetes backend mounts it from a ConfigMap; a pod has no stdin to write to)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m runner")
    parser.add_argument("--job-file", help="read the job JSON from this file, not stdin")
    parser.add_argument(
        "--warm",
        action="store_true",
        help="import and exercise the libraries first, say so on stderr, then wait for the "
        "job on stdin (a container started ahead of its job: the docker backend's pool)",
    )
    args = parser.parse_args(argv)
    if args.warm:
        prepare(warm=True)
        sys.stderr.write(READY_LINE)
        sys.stderr.flush()
    if args.job_file:
        with open(args.job_file, "rb") as fh:
            raw = fh.read()
    else:
        raw = sys.stdin.buffer.read()
    try:
        job = json.loads(raw)
        problem = job_problem(job)
    except ValueError as exc:
        problem = f"The job is not JSON: {exc}"
    if problem is not None:
        _answer(job_error(problem), framed=args.warm)
        return 2
    policy.one_job()
    _answer(run(job), framed=args.warm)
    if args.warm:
        # The result is out and the container is thrown away: no interpreter shutdown
        # (tens of milliseconds with pandas and plotly loaded).
        os._exit(0)
    return 0


def _answer(text: str, framed: bool) -> None:
    """The result on stdout; `framed` (--warm) puts its length in bytes on a line before
    it, so the backend has the whole result without waiting for the stream to end (the
    engine takes tens of milliseconds to report a container's exit)."""
    if not framed:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    data = text.encode("utf-8")
    sys.stdout.flush()
    sys.stdout.buffer.write(b"%d\n" % len(data) + data)
    sys.stdout.buffer.flush()


def job_error(message: str) -> str:
    """A result, in the result's full shape, for a job that could not be run."""
    return capture.dumps(blank_result(_error("JobError", message, None)))
