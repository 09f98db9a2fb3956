"""The offline model against public data, as `make eval` measures it (a fixed subset here):
each dataset through Quarry's own ingest, each question through the offline model, each
snippet through the real process sandbox, and the answer judged against pandas' truth.

Precision is what is asserted: an answer is right, or the question is not answered (and
an ambiguous question is asked back, never answered). The whole set, with coverage and the
list of wrong answers, is `make eval`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.eval.direct import Direct, direct
from tests.eval.judge import answered
from tests.eval.questions import CASES, Case
from tests.eval.report import judge

SUBSET = [c for c in CASES if c.subset]


@pytest.fixture(scope="module")
def runner() -> Iterator[Direct]:
    with direct(uid_base=67500) as found:
        yield found


@pytest.mark.parametrize("case", SUBSET, ids=[c.key for c in SUBSET])
def test_the_offline_model_answers_right_or_not_at_all(runner: Direct, case: Case) -> None:
    reply = runner.answer(case)
    outcome = judge(case, reply.text, reply.code)
    if case.truth is None:
        assert not answered(reply.text), reply.text  # asked back, never answered
    else:
        assert outcome.correct, (outcome.truth, reply.text, reply.code)


def test_a_question_with_a_misspelt_column_gets_did_you_mean(runner: Direct) -> None:
    reply = runner.ask("seattle-weather", "average temp_mx by weather")
    assert reply.code is None
    assert reply.text.startswith("I did not understand “temp_mx”.")
    assert "**temp_max**" in reply.text


def test_a_value_in_the_data_is_recognised_and_a_close_one_suggested(runner: Direct) -> None:
    japan = runner.ask("cars", "how many cars from Japan")
    assert "**79**" in japan.text
    typo = runner.ask("cars", "how many cars from Japn")
    assert typo.code is None
    assert "Japan (a value of Origin)" in typo.text


def test_every_plan_is_said_in_plain_words_before_the_answer(runner: Direct) -> None:
    reply = runner.ask("seattle-weather", "average temp_max by weather for 2012")
    assert reply.text.startswith("Average temp_max by weather, for rows where date is in 2012:")


def test_a_session_with_two_datasets_answers_about_the_one_asked_about(runner: Direct) -> None:
    """Every dataset of a session is visible; a question goes to the dataset whose columns
    or values it names, or that it names; a column two datasets share is asked about."""
    cars, weather = runner.table("cars"), runner.table("seattle-weather")
    both = [cars, weather]
    mpg = runner.ask_tables(both, "average mpg by origin")
    assert "| Japan | 30.4506 |" in mpg.text
    rain = runner.ask_tables(both, "how many days had rain in 2013")
    assert rain.code is not None
    assert "seattle_weather" in rain.code
    assert "**" in rain.text
    named = runner.ask_tables(both, "how many rows does seattle-weather have?")
    assert "**1461**" in named.text
    barley, iowa = runner.table("barley"), runner.table("iowa-electricity")
    shared = runner.ask_tables([barley, iowa], "total by year")
    assert shared.code is None
    assert "name the dataset" in shared.text or "I need one more detail" in shared.text
