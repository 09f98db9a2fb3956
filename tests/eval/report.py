"""Score and print an evaluation: coverage (answered / answerable), precision (correct /
answered), refusals, the ambiguous questions asked back, and every wrong answer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.eval.judge import answered, correct
from tests.eval.questions import Case

TARGET_PRECISION, TARGET_COVERAGE = 98.0, 70.0


@dataclass
class Outcome:
    key: str
    dataset: str
    question: str
    after: str | None
    answerable: bool
    answered: bool
    correct: bool
    truth: str
    reply: str
    code: str | None = None
    error: str | None = None


def judge(case: Case, reply: str, code: str | None = None, error: str | None = None) -> Outcome:
    truth = case.truth() if case.truth is not None else None
    said = answered(reply) and error is None
    return Outcome(
        key=case.key,
        dataset=case.dataset,
        question=case.question,
        after=case.after,
        answerable=case.truth is not None,
        answered=said,
        correct=said and correct(truth, reply),
        truth=repr(truth)[:300],
        reply=reply,
        code=code,
        error=error,
    )


def summary(outcomes: Sequence[Outcome]) -> dict[str, float | int]:
    answerable = [o for o in outcomes if o.answerable]
    said = [o for o in outcomes if o.answered]
    right = [o for o in said if o.correct]
    ambiguous = [o for o in outcomes if not o.answerable]
    return {
        "asked": len(outcomes),
        "answerable": len(answerable),
        "answered": len(said),
        "correct": len(right),
        "wrong": len(said) - len(right),
        "refused": len(answerable) - len([o for o in answerable if o.answered]),
        "ambiguous asked back": len([o for o in ambiguous if not o.answered]),
        "ambiguous": len(ambiguous),
        "coverage_percent": round(
            100 * len([o for o in answerable if o.answered]) / max(1, len(answerable)), 1
        ),
        "precision_percent": round(100 * len(right) / max(1, len(said)), 1),
    }


def show(
    outcomes: Sequence[Outcome], title: str, json_path: str | None = None
) -> dict[str, float | int]:
    n = summary(outcomes)
    cov, prec = float(n["coverage_percent"]), float(n["precision_percent"])
    lines = [
        f"\n{title}",
        f"  asked       {n['asked']:>5}  ({n['answerable']} answerable, "
        f"{n['ambiguous']} ambiguous or out of reach)",
        f"  answered    {n['answered']:>5}",
        f"  correct     {n['correct']:>5}",
        f"  wrong       {n['wrong']:>5}",
        f"  refused     {n['refused']:>5}  (answerable, not answered)",
        f"  asked back  {n['ambiguous asked back']:>5}  of {n['ambiguous']} ambiguous",
        f"  coverage    {cov:>5.1f} %  (target >= {TARGET_COVERAGE:.0f} %: "
        f"{'met' if cov >= TARGET_COVERAGE else 'NOT met'})",
        f"  precision   {prec:>5.1f} %  (target >= {TARGET_PRECISION:.0f} %: "
        f"{'met' if prec >= TARGET_PRECISION else 'NOT met'})",
    ]
    print("\n".join(lines))
    wrong = [o for o in outcomes if o.answered and not o.correct]
    if wrong:
        print("\nWrong answers:")
        for o in wrong:
            print(f"  - {o.key}\n      truth: {o.truth[:160]}\n      reply: {o.reply[:300]!r}")
    refused = [o for o in outcomes if o.answerable and not o.answered]
    if refused:
        print("\nNot answered (answerable):")
        for o in refused:
            print(f"  - {o.key}: {(o.error or o.reply)[:160]!r}")
    if json_path:
        body = {"summary": n, "outcomes": [asdict(o) for o in outcomes]}
        Path(json_path).write_text(json.dumps(body, indent=1) + "\n")
    return n
