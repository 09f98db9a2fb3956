"""Each page's logic in Streamlit's AppTest, against the real API and worker processes of
tests/ui/conftest.py (the offline model answers; no fake anywhere)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

from frontend.client import QuarryClient, Tokens
from tests.factories import CENSUS_CSV

APP = str(Path(__file__).resolve().parents[2] / "frontend" / "app.py")
PASSWORD = "correct horse battery"
TIMEOUT = 90


def _page(name: str) -> None:
    # runs as the script of an AppTest: imports inside
    import importlib

    importlib.import_module(f"frontend.views.{name}").page()


def signed_in(api_url: str, *, dataset: bool = True) -> tuple[QuarryClient, dict[str, Any], str]:
    """A new user with (optionally) the census dataset ready; returns the dataset id."""
    client = QuarryClient(api_url)
    email = f"ui-{uuid.uuid4().hex[:10]}@example.com"
    client.register(email, PASSWORD)
    me = client.login(email, PASSWORD)
    dataset_id = ""
    if dataset:
        dataset_id = client.upload("census.csv", CENSUS_CSV)["data"][0]["id"]
        deadline = time.monotonic() + 60
        while client.dataset(dataset_id)["status"] == "processing":
            assert time.monotonic() < deadline, "the dataset did not convert"
            time.sleep(0.2)
    return client, me, dataset_id


def run_own_code(client: QuarryClient, session_id: str, code: str) -> None:
    """The user's own code, run in the session's sandbox to the end."""
    run_id = client.execute(session_id, code)["run_id"]
    deadline = time.monotonic() + 60
    while client.run(run_id)["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)


def page(name: str, client: QuarryClient, me: dict[str, Any], **query: str) -> AppTest:
    at = AppTest.from_function(_page, args=(name,), default_timeout=TIMEOUT)
    at.session_state["client"] = client
    at.session_state["user"] = me
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.error] + [i.value for i in at.info]
    parts += [w.value for w in at.warning]
    parts += [t.value for t in at.title] + [s.value for s in at.subheader]
    return "\n".join(str(p) for p in parts)


def button(at: AppTest, label: str) -> Any:
    return next(b for b in at.button if b.label == label)


def test_sign_in_says_what_went_wrong_and_lets_the_user_in(api_url: str) -> None:
    _, me, _ = signed_in(api_url, dataset=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    at.text_input(key="login-email").input(me["email"])
    at.text_input(key="login-password").input("not the password")
    button(at, "Sign in").click().run()
    assert "Incorrect email or password" in texts(at)

    at.text_input(key="register-email").input(f"new-{uuid.uuid4().hex[:8]}@example.com")
    at.text_input(key="register-password").input("short")
    button(at, "Create the account").click().run()
    assert "at least 10 characters" in texts(at)

    at.text_input(key="login-password").input(PASSWORD)
    button(at, "Sign in").click().run()
    assert not at.exception
    assert at.session_state["user"]["email"] == me["email"]
    assert "Start a **new analysis**" in texts(at)  # the chat page, signed in


def test_an_expired_session_goes_back_to_sign_in_keeping_the_question(api_url: str) -> None:
    client, me, dataset_id = signed_in(api_url)
    session_id = client.create_session([dataset_id])["id"]
    client.tokens = Tokens("expired", "revoked")  # the refresh fails too
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["client"] = client
    at.session_state["user"] = me
    at.query_params["session"] = session_id
    at.run()
    assert not at.exception
    assert "Your session has ended" in texts(at)
    assert "user" not in at.session_state
    at.session_state["pending_question"] = "What is the mean age?"
    at.run()
    assert "Your question is kept" in texts(at)


def test_datasets_page_lists_previews_and_profiles(api_url: str) -> None:
    client, me, dataset_id = signed_in(api_url)
    at = page("datasets", client, me)
    assert not at.exception
    assert at.dataframe, "the dataset list"
    listed = at.dataframe[0].value
    assert list(listed["name"]) == ["census"]
    assert list(listed["rows"]) == [8]
    assert at.subheader[0].value == "census"
    preview = at.dataframe[1].value
    assert list(preview.columns)[:2] == ["age", "income"] or "age" in list(preview.columns)
    profile = at.dataframe[2].value
    assert set(profile["column"]) >= {"age", "income", "education"}
    # types in words, not Arrow's names (int64, large_string)
    types = dict(zip(profile["column"], profile["type"], strict=True))
    assert (types["age"], types["education"]) == ("whole number", "text")
    # two datasets of one name are told apart in the picker by their shape and time
    [option] = at.selectbox(key="dataset").options
    assert option.startswith("census · 8 rows × 4 columns · 20")  # noqa: RUF001
    assert at.toggle(key=f"share-{dataset_id}").value is True
    at.toggle(key=f"share-{dataset_id}").set_value(False).run()
    assert client.dataset(dataset_id)["share_samples"] is False


def test_the_file_picker_offers_what_the_api_accepts(api_url: str) -> None:
    """The list lives in the API (api/ingest/sniff.py): the UI's copy had drifted (no .tab,
    no .pq)."""
    client, me, _ = signed_in(api_url, dataset=False)
    at = page("datasets", client, me)
    [uploader] = at.get("file_uploader")
    offered = sorted(t.lstrip(".") for t in uploader.proto.type)
    assert offered == client.upload_formats()
    assert {"tab", "pq", "csv", "zip"} <= set(offered)


def test_uploading_without_a_file_says_to_choose_one(api_url: str) -> None:
    client, me, _ = signed_in(api_url, dataset=False)
    at = page("datasets", client, me)
    button(at, "Upload and convert").click().run()
    assert not at.exception
    assert "Choose a file first" in texts(at)
    assert client.datasets() == []


def test_a_new_user_sees_helpful_empty_states(api_url: str) -> None:
    client, me, _ = signed_in(api_url, dataset=False)
    assert "No datasets yet" in texts(page("datasets", client, me))
    chat = page("chat", client, me)
    assert "Start a **new analysis**" in texts(chat)
    assert "No charts yet" in texts(page("charts", client, me))
    model = page("model", client, me)
    assert "offline model" in texts(model)
    assert "Average income by education" in texts(model)


def test_a_question_streams_to_an_answer_with_its_chart_and_stays(api_url: str) -> None:
    client, me, dataset_id = signed_in(api_url)
    session_id = client.create_session([dataset_id], "Census")["id"]
    at = page("chat", client, me, session=session_id)
    assert not at.exception
    assert at.title[0].value == "Census"
    at.chat_input[0].set_value("average income by education").run()
    assert not at.exception, at.exception
    shown = texts(at)
    assert "average income by education" in shown
    assert "| PhD | 95000.0 |" in shown  # the answer, drawn from the stored conversation
    assert at.get("plotly_chart"), "the chart"
    assert any(s.label.startswith("Code ran") for s in at.status)

    # opening the session again (a reload) shows the same conversation
    again = page("chat", client, me, session=session_id)
    assert "| PhD | 95000.0 |" in texts(again)
    assert again.get("plotly_chart")
    charts = page("charts", client, me, session=session_id)
    assert charts.get("plotly_chart")
    assert [b.label for b in charts.get("download_button")][:2] == [
        "Download HTML",
        "Download JSON",
    ]
    # with no session open, the Charts page lists the newest charts of every session
    recent = page("charts", client, me)
    assert recent.get("plotly_chart")
    assert "In “Census”" in texts(recent)


def test_another_users_session_in_the_url_is_not_shown(api_url: str) -> None:
    owner, _, dataset_id = signed_in(api_url)
    session_id = owner.create_session([dataset_id], "Private")["id"]
    other, me, _ = signed_in(api_url, dataset=False)
    at = page("chat", other, me, session=session_id)
    assert not at.exception
    assert "does not exist (or is not yours)" in texts(at)
    assert "Private" not in texts(at)


def test_edit_and_rerun_runs_the_edited_code_in_the_sandbox(api_url: str) -> None:
    client, me, dataset_id = signed_in(api_url)
    session_id = client.create_session([dataset_id])["id"]
    run_own_code(client, session_id, "print(df['age'].max())")
    at = page("chat", client, me, session=session_id)
    assert not at.exception
    assert "Your code" in texts(at)
    assert "60" in [c.value.strip() for c in at.code]

    [first] = client.executions(session_id)
    assert at.status[0].proto.expanded  # the user's own code is shown open
    at.button(key=f"open-{first['id']}").click().run()  # the editor opens
    at.text_area(key=f"edit-{first['id']}").input("print(df['age'].min())")
    button(at, "Run in the sandbox").click().run()
    assert not at.exception, at.exception
    # the editor closed once the code was sent
    assert f"edit-{first['id']}" not in [t.key for t in at.text_area]
    ran = client.executions(session_id)
    assert [e["code"] for e in ran] == ["print(df['age'].max())", "print(df['age'].min())"]
    assert "25" in [c.value.strip() for c in at.code]


def test_an_empty_chat_offers_questions_and_a_click_asks_one(api_url: str) -> None:
    """The offered questions are built from the session's dataset and the offline model
    answers each; a question it did not understand offers others, one click away."""
    client, me, dataset_id = signed_in(api_url)
    session_id = client.create_session([dataset_id], "Offered")["id"]
    offered = client.suggestions(session_id)
    assert 4 <= len(offered) <= 6
    assert "Average age by education" in offered
    at = page("chat", client, me, session=session_id)
    assert "Try one of these" in texts(at)
    button(at, "Average age by education").click().run()
    assert not at.exception, at.exception
    assert "| PhD | 55.0 |" in texts(at)  # the answer to the question clicked
    assert "Try one of these" not in texts(at)

    at.chat_input[0].set_value("average salary by education").run()
    assert "I did not understand “salary”." in texts(at)
    offered_again = [b.label for b in at.button if b.key and b.key.startswith("suggest-")]
    assert "Average age by education" in offered_again


def test_a_result_table_shows_decimals_rounded_and_keeps_every_digit(api_url: str) -> None:
    """`std` of the census ages is 12.247448713915889: the table shows it rounded (the
    browser formats it: at most three places), its data (and the table's download) keep
    every digit."""
    import json

    client, me, dataset_id = signed_in(api_url)
    session_id = client.create_session([dataset_id])["id"]
    run_own_code(client, session_id, "df[['age']].describe()")
    at = page("chat", client, me, session=session_id)
    assert not at.exception
    [shown] = [d for d in at.dataframe if "age" in d.value.columns]
    std = shown.value["age"].tolist()[2]
    assert abs(std - 12.247448713915889) < 1e-12  # every digit kept, not 12.247
    config = json.loads(shown.proto.columns)
    assert config["age"]["type_config"]["format"] == "localized"
