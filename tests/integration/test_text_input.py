"""Text PostgreSQL cannot store is refused with a 422 that names the field, at every entry.

A NUL character (\\u0000) anywhere in a text field used to reach the database and come back
as a 500 ("A string literal cannot contain NUL characters"); so did an unpaired UTF-16
surrogate ("\\ud800", which JSON can spell but UTF-8 cannot encode). Each entry point is
driven through the API against the real database.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.models import AnalysisSession, Dataset, Message, Run
from api.models import User as UserRow
from api.schemas import text_problem
from tests.factories import CENSUS_CSV, PASSWORD, Client, User

NUL = "\x00"
SURROGATE = "\ud800"


def _raw_json(value: dict[str, Any]) -> bytes:
    """JSON as a client may send it: a lone surrogate spelled as its \\u escape."""
    return json.dumps(value).encode()


def _assert_refused(response: Any, field: str, what: str = "NUL") -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["request_id"]
    assert error["message"].startswith(f"{field}: "), error["message"]
    assert what in error["message"], error["message"]
    assert {"field": field, "message": error["message"].removeprefix(f"{field}: ")} in error[
        "details"
    ]


def _counts(engine: Engine) -> dict[str, int]:
    with Session(engine) as db:
        return {
            model.__name__: int(db.scalar(select(func.count()).select_from(model)) or 0)
            for model in (UserRow, Dataset, AnalysisSession, Message, Run)
        }


# --- the rule itself ---------------------------------------------------------------------------


def test_text_problem_says_what_is_wrong_and_where() -> None:
    assert text_problem("plain text, accents é, emoji 🦜") is None
    nul = text_problem("ab\x00c")
    assert nul is not None
    assert "NUL" in nul
    assert "position 2" in nul
    assert "remove it" in nul
    surrogate = text_problem("a\ud800")
    assert surrogate is not None
    assert "\\ud800" in surrogate
    assert "position 1" in surrogate


# --- JSON bodies -------------------------------------------------------------------------------

CASES = [
    # (method, path template, body, field)
    ("POST", "/api/sessions", {"title": "a{x}b"}, "title"),
    ("PATCH", "/api/sessions/{session}", {"title": "a{x}b"}, "title"),
    ("POST", "/api/sessions/{session}/messages", {"content": "mean{x} age?"}, "content"),
    ("POST", "/api/sessions/{session}/executions", {"code": "1 + 1{x}"}, "code"),
    ("PATCH", "/api/datasets/{dataset}", {"name": "n{x}"}, "name"),
    ("PATCH", "/api/datasets/{dataset}", {"description": "d{x}"}, "description"),
    ("POST", "/api/auth/logout", {"refresh_token": "t{x}"}, "refresh_token"),
    ("POST", "/api/auth/refresh", {"refresh_token": "t{x}"}, "refresh_token"),
]


@pytest.fixture
def owner(client: Client) -> tuple[User, str, str]:
    user = client.user()
    dataset = client.ready_dataset(user)["id"]
    session = client.session(user, [dataset])["id"]
    return user, session, dataset


def _send(client: Client, user: User, method: str, path: str, body: dict[str, Any]) -> Any:
    return client.request(
        method,
        path,
        headers={**user.headers, "Content-Type": "application/json"},
        content=_raw_json(body),
    )


@pytest.mark.parametrize(("bad", "what"), [(NUL, "NUL"), (SURROGATE, "surrogate")])
@pytest.mark.parametrize(("method", "template", "body", "field"), CASES)
def test_json_text_fields_refuse_nul_and_surrogates(
    client: Client,
    pg_engine: Engine,
    owner: tuple[User, str, str],
    method: str,
    template: str,
    body: dict[str, Any],
    field: str,
    bad: str,
    what: str,
) -> None:
    user, session, dataset = owner
    path = template.format(session=session, dataset=dataset)
    filled = {k: v.replace("{x}", bad) for k, v in body.items()}
    before = _counts(pg_engine)
    _assert_refused(_send(client, user, method, path, filled), field, what)
    assert _counts(pg_engine) == before
    # The same request without the bad character goes through.
    clean = {k: v.replace("{x}", "") for k, v in body.items()}
    assert _send(client, user, method, path, clean).status_code < 400 or field == "refresh_token"


@pytest.mark.parametrize(("bad", "what"), [(NUL, "NUL"), (SURROGATE, "surrogate")])
@pytest.mark.parametrize("field", ["email", "password", "full_name"])
def test_registration_refuses_nul_and_surrogates_in_every_field(
    client: Client, pg_engine: Engine, field: str, bad: str, what: str
) -> None:
    body = {"email": "nul-check@example.com", "password": PASSWORD, "full_name": "Nul Check"}
    body[field] = body[field][:3] + bad + body[field][3:]
    before = _counts(pg_engine)
    response = client.post(
        "/api/auth/register",
        content=_raw_json(body),
        headers={"Content-Type": "application/json"},
    )
    if field == "email":  # the email check names the field and the character itself
        assert response.status_code == 422, response.text
        assert response.json()["error"]["message"].startswith("email: ")
    else:
        _assert_refused(response, field, what)
    assert _counts(pg_engine) == before


@pytest.mark.parametrize("field", ["email", "password"])
def test_json_sign_in_refuses_nul(client: Client, field: str) -> None:
    user = client.user()
    body = {"email": user.email, "password": PASSWORD}
    body[field] = NUL + body[field]
    response = client.post("/api/auth/login", json=body)
    _assert_refused(response, field)


@pytest.mark.parametrize("field", ["email", "password"])
def test_json_sign_in_refuses_surrogates(client: Client, field: str) -> None:
    user = client.user()
    body = {"email": user.email, "password": PASSWORD}
    body[field] = SURROGATE + body[field]
    response = client.post(
        "/api/auth/login", content=_raw_json(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith("body: Request body is not valid JSON")


@pytest.mark.parametrize("field", ["username", "password"])
def test_form_sign_in_refuses_nul_and_names_the_form_field(client: Client, field: str) -> None:
    user = client.user()
    form = {"username": user.email, "password": PASSWORD}
    form[field] = form[field] + NUL
    response = client.post("/api/auth/login", data=form)
    _assert_refused(response, field)
    # and the form still signs in without it
    assert (
        client.post(
            "/api/auth/login", data={"username": user.email, "password": PASSWORD}
        ).status_code
        == 200
    )


# --- query strings and path parameters ---------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "field"),
    [
        ("/api/datasets?status=ready%00", "status"),
        ("/api/datasets/{dataset}/download?format=csv%00", "format"),
        ("/api/sessions/{session}/visualizations?include_figure=true%00", "include_figure"),
        ("/api/sessions?limit=5%00", "limit"),
        ("/api/sessions/%00", "session_id"),
    ],
)
def test_nul_in_query_strings_and_paths_is_a_422(
    client: Client, owner: tuple[User, str, str], template: str, field: str
) -> None:
    user, session, dataset = owner
    response = client.get(template.format(session=session, dataset=dataset), headers=user.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith(f"{field}: ")


# --- uploads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["name", "description"])
def test_upload_form_fields_refuse_nul(client: Client, pg_engine: Engine, field: str) -> None:
    user = client.user()
    before = _counts(pg_engine)
    response = client.post(
        "/api/datasets",
        headers=user.headers,
        files={"file": ("census.csv", CENSUS_CSV, "text/csv")},
        data={field: f"census{NUL}2020"},
    )
    _assert_refused(response, field)
    assert _counts(pg_engine) == before


def test_a_nul_in_the_upload_filename_is_dropped_not_stored(client: Client) -> None:
    user = client.user()
    boundary = "quarry-boundary"
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="cen{NUL}sus.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + CENSUS_CSV
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = client.post(
        "/api/datasets",
        headers={**user.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=body,
    )
    assert response.status_code == 202, response.text
    [dataset] = response.json()["data"]
    assert dataset["original_filename"] == "census.csv"
    assert dataset["name"] == "census"


@pytest.mark.parametrize("filename", ["données.csv", "中国.csv"])
def test_upload_filenames_keep_their_non_ascii_characters(client: Client, filename: str) -> None:
    user = client.user()
    [dataset] = client.upload(user, CENSUS_CSV, filename)["data"]
    assert dataset["original_filename"] == filename
