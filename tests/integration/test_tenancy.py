"""Tenancy matrix: two users, every endpoint that takes an id, every verb it accepts.

Another user's object must answer 404 (never 403, never its data) and stay unchanged. The
matrix is built from the routers themselves, so a new route with an id fails this test
until it is given a case here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from api.main import create_app
from api.models import Dataset, Message, Run, Visualization
from tests.conftest import make_settings
from tests.factories import Client, User, api_routes

# What to send with each (method, template); None = no body.
BODIES: dict[tuple[str, str], dict[str, Any] | None] = {
    ("GET", "/api/datasets/{dataset_id}"): None,
    ("PATCH", "/api/datasets/{dataset_id}"): {"name": "stolen"},
    ("DELETE", "/api/datasets/{dataset_id}"): None,
    ("GET", "/api/datasets/{dataset_id}/preview"): None,
    ("GET", "/api/datasets/{dataset_id}/download"): None,
    ("GET", "/api/sessions/{session_id}"): None,
    ("PATCH", "/api/sessions/{session_id}"): {"title": "stolen", "dataset_ids": []},
    ("DELETE", "/api/sessions/{session_id}"): None,
    ("GET", "/api/sessions/{session_id}/messages"): None,
    ("POST", "/api/sessions/{session_id}/messages"): {"content": "give me your data"},
    ("GET", "/api/sessions/{session_id}/visualizations"): None,
    ("GET", "/api/sessions/{session_id}/suggestions"): None,
    ("POST", "/api/sessions/{session_id}/executions"): {"code": "print(df.head())"},
    ("GET", "/api/sessions/{session_id}/executions"): None,
    ("GET", "/api/sessions/{session_id}/export.ipynb"): None,
    ("GET", "/api/runs/{run_id}"): None,
    ("GET", "/api/runs/{run_id}/events"): None,
    ("POST", "/api/runs/{run_id}/cancel"): None,
    ("GET", "/api/visualizations/{visualization_id}"): None,
}


class World:
    """Alice owns one of everything; Bob owns his own copies."""

    def __init__(
        self, client: Client, engine: Engine, owners: tuple[str, ...] = ("alice", "bob")
    ) -> None:
        self.alice = client.user()
        self.bob = client.user()
        self.ids: dict[str, dict[str, str]] = {}
        for name, user in (("alice", self.alice), ("bob", self.bob)):
            if name not in owners:
                continue
            dataset = client.ready_dataset(user)
            session = client.session(user, [dataset["id"]])
            turn = client.post(
                f"/api/sessions/{session['id']}/messages",
                headers=user.headers,
                json={"content": "mean age?"},
            ).json()
            with Session(engine) as db:
                viz = Visualization(
                    user_id=uuid.UUID(user.id),
                    session_id=uuid.UUID(session["id"]),
                    run_id=uuid.UUID(turn["run_id"]),
                    title="Ages",
                    figure={"data": [{"type": "histogram", "x": [25, 30]}], "layout": {}},
                )
                db.add(viz)
                db.commit()
                viz_id = str(viz.id)
            self.ids[name] = {
                "dataset_id": dataset["id"],
                "session_id": session["id"],
                "run_id": turn["run_id"],
                "visualization_id": viz_id,
            }

    def url(self, template: str, owner: str) -> str:
        for key, value in self.ids[owner].items():
            template = template.replace("{" + key + "}", value)
        return template


@pytest.fixture
def world(client: Client, pg_engine: Engine) -> World:
    return World(client, pg_engine)


@pytest.fixture
def bobs_world(client: Client, pg_engine: Engine) -> World:
    return World(client, pg_engine, owners=("bob",))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[tuple[Client, World]]:
    """One world for the read-mostly 404 checks (they must not change anything anyway)."""
    settings = make_settings(tmp_path_factory.mktemp("tenancy"), pg_url)
    engine = create_engine(pg_url, poolclass=NullPool)
    with TestClient(create_app(settings)) as http:
        client = Client(http)
        yield client, World(client, engine)
    engine.dispose()


def _id_routes() -> list[tuple[str, str]]:
    return [(m, p) for m, p in api_routes() if "{" in p]


def test_every_route_with_an_id_is_in_the_matrix() -> None:
    assert set(_id_routes()) == set(BODIES), "add the new route to BODIES"


def _counts(engine: Engine, user: User) -> dict[str, int]:
    uid = uuid.UUID(user.id)
    with Session(engine) as db:
        return {
            model.__name__: int(
                db.scalar(select(func.count()).select_from(model).where(model.user_id == uid)) or 0
            )
            for model in (Dataset, Message, Run, Visualization)
        }


@pytest.mark.parametrize(("method", "template"), sorted(BODIES))
def test_another_users_object_answers_404_and_stays_unchanged(
    shared: tuple[Client, World], pg_engine: Engine, method: str, template: str
) -> None:
    client, world = shared
    url = world.url(template, "alice")
    before = _counts(pg_engine, world.alice)
    alice_view = client.get(
        world.url("/api/sessions/{session_id}", "alice"), headers=world.alice.headers
    )

    response = client.request(
        method, url, headers=world.bob.headers, json=BODIES[(method, template)]
    )

    assert response.status_code == 404, (method, url, response.text)
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "not_found"
    for value in world.ids["alice"].values():
        assert value not in response.text
    # nothing of Alice's changed
    assert _counts(pg_engine, world.alice) == before
    again = client.get(
        world.url("/api/sessions/{session_id}", "alice"), headers=world.alice.headers
    )
    assert again.json() == alice_view.json()
    dataset = client.get(
        world.url("/api/datasets/{dataset_id}", "alice"), headers=world.alice.headers
    )
    assert dataset.json()["name"] == "census"


@pytest.mark.parametrize(("method", "template"), sorted(BODIES))
def test_the_owner_reaches_the_same_object(
    client: Client, bobs_world: World, method: str, template: str
) -> None:
    """The 404s above are about ownership, not about broken URLs."""
    world = bobs_world
    url = world.url(template, "bob")
    if template.endswith("/events"):
        url += "?follow=false"  # the run waits for a worker: take what exists and end
    response = client.request(
        method, url, headers=world.bob.headers, json=BODIES[(method, template)]
    )
    # (a question is already waiting in that session: "one at a time" proves it was found)
    busy = {429} if template.endswith(("/messages", "/executions")) and method == "POST" else set()
    assert response.status_code in {200, 202, 204} | busy, (method, url, response.text)


def test_lists_show_only_your_own_objects(client: Client, world: World) -> None:
    for path, key in (
        ("/api/datasets", "dataset_id"),
        ("/api/sessions", "session_id"),
        ("/api/visualizations", "visualization_id"),
    ):
        mine = client.get(path, headers=world.bob.headers).json()
        assert [item["id"] for item in mine["data"]] == [world.ids["bob"][key]]
        assert mine["count"] == 1


def test_you_cannot_attach_somebody_elses_dataset(client: Client, world: World) -> None:
    alice_dataset = world.ids["alice"]["dataset_id"]
    created = client.post(
        "/api/sessions", headers=world.bob.headers, json={"dataset_ids": [alice_dataset]}
    )
    assert created.status_code == 404
    patched = client.patch(
        world.url("/api/sessions/{session_id}", "bob"),
        headers=world.bob.headers,
        json={"dataset_ids": [world.ids["bob"]["dataset_id"], alice_dataset]},
    )
    assert patched.status_code == 404
    session = client.get(world.url("/api/sessions/{session_id}", "bob"), headers=world.bob.headers)
    assert [d["id"] for d in session.json()["datasets"]] == [world.ids["bob"]["dataset_id"]]


def test_unknown_ids_answer_like_other_users_ids(client: Client, world: World) -> None:
    """No oracle: an id that exists for somebody else and one that exists nowhere look alike."""
    for template in ("/api/datasets/{dataset_id}", "/api/sessions/{session_id}"):
        theirs = client.get(world.url(template, "alice"), headers=world.bob.headers).json()
        nobody = client.get(
            template.replace("{dataset_id}", str(uuid.uuid4())).replace(
                "{session_id}", str(uuid.uuid4())
            ),
            headers=world.bob.headers,
        ).json()
        assert theirs["error"]["message"] == nobody["error"]["message"]
