"""Run many runner jobs in one process, for tests: `python -m tests.runner_harness` reads one
job JSON per line on stdin and writes `runner.main.run(job)` as one line on stdout.

The runner installs process-wide patches (an audit hook, library wrappers, numpy print
options), so tests never import it themselves; they talk to this process instead. It runs
the runner unsandboxed (no OS isolation) and ends normally at end of input, so that
coverage, started in subprocesses by the project's configuration, saves its data.

`--untraced` stops coverage's tracer first (for the timeout tests: see main).

`--warm` prepares the process as the warm pool does before handing it a job
(`runner.main.prepare(warm=True)`: the libraries imported and exercised once).
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    from runner.main import prepare, run

    if "--untraced" in argv:
        # Coverage's tracer holds a lock while it records a line; the soft timeout's
        # SIGALRM can land right there and leave it held, hanging the process. The
        # runner never runs under a tracer in a sandbox, so timeout tests run without one.
        import coverage

        current = coverage.Coverage.current()
        if current is not None:
            current.stop()

    if "--warm" in argv:
        # As the warm pool's zygote does before any job: import the libraries and
        # exercise them once.
        prepare(warm=True)

    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        # The result is JSON without raw newlines (json.dumps escapes them): one line.
        out.write(run(json.loads(line)).encode() + b"\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
