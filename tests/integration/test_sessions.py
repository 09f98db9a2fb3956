"""Analysis sessions: create, rename, archive, attach datasets, messages and their runs."""

from __future__ import annotations

import uuid

from tests.factories import Client


def test_session_lifecycle(client: Client) -> None:
    user = client.user()
    census = client.ready_dataset(user)
    other = client.ready_dataset(user, b"city,temp\nOslo,4\nRome,18\n", "weather.csv")

    session = client.session(user)
    assert session["title"] == "New analysis"
    assert session["status"] == "active"
    assert session["datasets"] == []

    patched = client.patch(
        f"/api/sessions/{session['id']}",
        headers=user.headers,
        json={"title": "  Incomes  ", "dataset_ids": [census["id"], other["id"], census["id"]]},
    ).json()
    assert patched["title"] == "Incomes"
    assert [d["id"] for d in patched["datasets"]] == [census["id"], other["id"]]
    assert patched["datasets"][1] | {"added_at": None} == {
        "id": other["id"],
        "name": "weather",
        "status": "ready",
        "row_count": 2,
        "column_count": 2,
        "added_at": None,
        "deleted_at": None,
    }

    replaced = client.patch(
        f"/api/sessions/{session['id']}", headers=user.headers, json={"dataset_ids": [other["id"]]}
    ).json()
    assert [d["name"] for d in replaced["datasets"]] == ["weather"]

    fetched = client.get(f"/api/sessions/{session['id']}", headers=user.headers).json()
    assert fetched == replaced

    assert client.delete(f"/api/sessions/{session['id']}", headers=user.headers).status_code == 204
    assert client.get(f"/api/sessions/{session['id']}", headers=user.headers).status_code == 404
    # the datasets themselves are untouched
    assert client.get(f"/api/datasets/{other['id']}", headers=user.headers).status_code == 200


def test_posting_a_message_queues_a_run(client: Client) -> None:
    user = client.user()
    session = client.session(user)
    response = client.post(
        f"/api/sessions/{session['id']}/messages",
        headers=user.headers,
        json={"content": "What is the mean age?"},
    )
    assert response.status_code == 202
    turn = response.json()
    assert turn["run_id"] == turn["run"]["id"] == turn["message"]["run_id"]
    assert turn["message"]["role"] == "user"
    assert turn["run"]["status"] == "queued"
    run = client.get(f"/api/runs/{turn['run_id']}", headers=user.headers).json()
    assert run["session_id"] == session["id"]
    assert (run["prompt_tokens"], run["completion_tokens"], run["cost_usd"]) == (0, 0, 0.0)


def test_archived_sessions_refuse_new_questions_until_reopened(client: Client) -> None:
    user = client.user()
    session = client.session(user)
    url = f"/api/sessions/{session['id']}"
    assert client.patch(url, headers=user.headers, json={"status": "archived"}).status_code == 200
    refused = client.post(f"{url}/messages", headers=user.headers, json={"content": "hello"})
    assert refused.status_code == 409
    assert "archived" in refused.json()["error"]["message"]
    client.patch(url, headers=user.headers, json={"status": "active"})
    assert (
        client.post(f"{url}/messages", headers=user.headers, json={"content": "hi"}).status_code
        == 202
    )


def test_failed_datasets_cannot_be_attached(client: Client) -> None:
    user = client.user()
    ragged = b"a,b\n" + b"1,2,3,4\n" * 2000  # every row has the wrong number of fields
    [dataset] = client.upload(user, ragged, "ragged.csv")["data"]
    failed = client.wait_dataset(user, dataset["id"])
    assert failed["status"] == "failed"
    response = client.post(
        "/api/sessions", headers=user.headers, json={"dataset_ids": [dataset["id"]]}
    )
    assert response.status_code == 422
    assert "ragged" in response.json()["error"]["message"]


def test_bad_session_input_is_refused_with_reasons(client: Client) -> None:
    user = client.user()
    session = client.session(user)
    cases = [
        ("POST", "/api/sessions", {"title": ""}, "title"),
        ("POST", "/api/sessions", {"title": "x" * 201}, "title"),
        ("POST", "/api/sessions", {"dataset_ids": ["nope"]}, "dataset_ids"),
        ("POST", "/api/sessions", {"dataset_ids": [str(uuid.uuid4())] * 21}, "dataset_ids"),
        ("PATCH", f"/api/sessions/{session['id']}", {"status": "deleted"}, "status"),
        ("POST", f"/api/sessions/{session['id']}/messages", {"content": ""}, "content"),
        ("POST", f"/api/sessions/{session['id']}/messages", {"content": "x" * 20_001}, "content"),
        ("POST", f"/api/sessions/{session['id']}/messages", {"text": "hi"}, "content"),
    ]
    for method, url, body, field in cases:
        response = client.request(method, url, headers=user.headers, json=body)
        assert response.status_code == 422, (url, body, response.text)
        error = response.json()["error"]
        assert error["message"].startswith(field), error
    # nothing was created by the refused requests
    assert client.get("/api/sessions", headers=user.headers).json()["count"] == 1
    messages = client.get(f"/api/sessions/{session['id']}/messages", headers=user.headers)
    assert messages.json()["count"] == 0


def test_pages_are_bounded_and_consistent(client: Client) -> None:
    user = client.user()
    ids = [client.session(user, title=f"s{i}")["id"] for i in range(5)]
    page = client.get("/api/sessions?limit=2&offset=1", headers=user.headers).json()
    assert (page["count"], page["limit"], page["offset"]) == (5, 2, 1)
    assert [s["id"] for s in page["data"]] == list(reversed(ids))[1:3]
    for query in ("limit=0", "limit=201", "offset=-1", "limit=abc"):
        assert client.get(f"/api/sessions?{query}", headers=user.headers).status_code == 422
    past_the_end = client.get("/api/sessions?offset=50", headers=user.headers).json()
    assert past_the_end["data"] == []
    assert past_the_end["count"] == 5
