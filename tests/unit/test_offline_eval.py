"""The offline model against public data, as `make eval` measures it: each dataset through
Quarry's own ingest, each of the evaluation's questions through the offline model, each
snippet through the real process sandbox, and the answer judged against pandas' truth.

What is asserted is precision: an answer is right or the question is not answered (an
ambiguous one is asked back, never answered); the `subset` questions must be answered; and
the whole set meets the targets (precision >= 98 %, coverage >= 70 %). `make eval` prints
the same through the API and a worker, with the list of what it does not answer.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.eval.direct import Direct, direct
from tests.eval.questions import CASES, Case
from tests.eval.questions_heldout import CASES_HELDOUT
from tests.eval.questions_newcomer import CASES_NEWCOMER
from tests.eval.report import TARGET_COVERAGE, TARGET_PRECISION, Outcome, judge, summary

EVERY = [*CASES, *CASES_NEWCOMER, *CASES_HELDOUT]


@pytest.fixture(scope="module")
def runner() -> Iterator[Direct]:
    with direct(uid_base=67500) as found:
        yield found


@pytest.fixture(scope="module")
def outcomes(runner: Direct) -> dict[str, Outcome]:
    """Every question of `make eval`, asked once (about 20 s)."""
    found = {}
    for case in EVERY:
        reply = runner.answer(case)
        found[case.key] = judge(case, reply.text, reply.code)
    return found


@pytest.mark.parametrize("case", EVERY, ids=[c.key for c in EVERY])
def test_the_offline_model_answers_right_or_not_at_all(
    outcomes: dict[str, Outcome], case: Case
) -> None:
    outcome = outcomes[case.key]
    if case.truth is None:
        assert not outcome.answered, outcome.reply  # asked back, never answered
    elif case.subset or outcome.answered:  # questions it must answer
        assert outcome.correct, (outcome.truth, outcome.reply, outcome.code)


def test_the_evaluation_meets_its_targets(outcomes: dict[str, Outcome]) -> None:
    numbers = summary(list(outcomes.values()))
    assert numbers["precision_percent"] >= TARGET_PRECISION, numbers
    assert numbers["coverage_percent"] >= TARGET_COVERAGE, numbers


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
    assert "both have it: name the dataset" in shared.text


def test_two_datasets_are_joined_on_the_column_they_share(runner: Direct) -> None:
    """A question over columns of two datasets joins them on the column they share (here
    a date written differently in each file); a column both have is the one its dataset
    qualifies; a join that one side does not feed, or with nothing to join, is asked back."""
    both = [runner.table("seattle-temps"), runner.table("sf-temps")]
    reply = runner.ask_tables(
        both, "average temp of sf-temps where temp of seattle-temps is above 70"
    )
    assert reply.text.startswith(
        "Average temp (sf-temps), over seattle-temps joined with sf-temps on date, for rows "
        "where temp (seattle-temps) is more than 70: **67.7887**."
    )
    assert reply.code is not None
    assert ".merge(" in reply.code

    which = runner.ask_tables(both, "average temp")
    assert which.code is None
    assert "seattle-temps and sf-temps both have it" in which.text
    assert "“temp of sf-temps”" in which.text

    idle = runner.ask_tables(both, "join the two datasets and show the average temp of sf-temps")
    assert idle.code is None
    assert "what seattle-temps adds to this question" in idle.text

    alone = runner.ask("cars", "join it with the other dataset")
    assert alone.code is None
    assert "this session has one dataset" in alone.text


@pytest.mark.parametrize(
    "names", [["seattle-temps", "sf-temps"], ["barley", "iowa-electricity"], ["cars"]]
)
def test_every_offered_question_is_answered(runner: Direct, names: list[str]) -> None:
    """What an empty chat offers is a promise: in a session of several datasets a column
    two of them have is named with its dataset, so that no offered question is asked back."""
    from langchain_core.messages import SystemMessage

    from api.profiles import suggestions, tables
    from tests.eval.direct import system_prompt
    from worker.agent.nlq.schema import schema_line

    held = [runner.table(n) for n in names]
    known = tables(
        schema_line([SystemMessage(system_prompt(held))]), {t.variable: t.profile for t in held}
    )
    offered = suggestions(known)
    assert len(offered) >= 3
    for question in offered:
        reply = runner.ask_tables(held, question)
        assert reply.code is not None, (question, reply.text)
        assert "could not compute" not in reply.text, (question, reply.text)
