"""`make eval`: ask the evaluation's questions and print coverage, precision and the wrong
answers.

    python -m tests.eval [--direct] [--subset] [--only TEXT] [--json PATH]

By default each question goes through the real stack (tests/eval/stack.py: the API served
by uvicorn, a Celery worker with the process sandbox, PostgreSQL, Redis): the datasets are
uploaded through the API, every question is asked in a session of its own (a follow-up in
the session of the question it follows) and the answer is read from the run's events. The
chat model is what the worker would use: the offline model, or any OpenAI-compatible
endpoint when OPENAI_API_KEY (and OPENAI_BASE_URL, LLM_MODEL) are set.

`--direct` skips the services (tests/eval/direct.py: the same ingest, model and sandbox,
in this process), `--subset` asks only the questions `make test` asks.
"""

from __future__ import annotations

import argparse
import sys
import time

from tests.eval.questions import CASES
from tests.eval.questions_heldout import CASES_HELDOUT
from tests.eval.questions_newcomer import CASES_NEWCOMER
from tests.eval.report import judge, show


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.eval")
    parser.add_argument("--direct", action="store_true", help="no API, database or Celery")
    parser.add_argument("--subset", action="store_true", help="the questions make test asks")
    parser.add_argument("--only", help="questions containing this text")
    parser.add_argument(
        "--heldout", action="store_true", help="only the held-out set (questions_heldout.py)"
    )
    parser.add_argument("--json", help="write every outcome here")
    args = parser.parse_args(argv)
    every = CASES_HELDOUT if args.heldout else [*CASES, *CASES_NEWCOMER, *CASES_HELDOUT]
    cases = [c for c in every if (c.subset or not args.subset)]
    if args.only:
        cases = [c for c in cases if args.only.lower() in c.key.lower()]
    started = time.monotonic()
    outcomes = []
    if args.direct:
        from tests.eval.direct import direct

        with direct() as runner:
            for case in cases:
                try:
                    reply = runner.answer(case)
                    outcomes.append(judge(case, reply.text, reply.code))
                except Exception as exc:  # a question that breaks the run is a finding
                    outcomes.append(judge(case, "", None, f"{type(exc).__name__}: {exc}"))
        title = (
            "Offline evaluation, direct (model, ingest and sandbox in-process): "
            f"{len(cases)} questions"
        )
    else:
        from tests.eval.stack import run_through_api

        outcomes, model = run_through_api(cases)
        title = f"Evaluation through the API and a worker (model: {model}): {len(cases)} questions"
    show(outcomes, title + f", {time.monotonic() - started:.0f} s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
