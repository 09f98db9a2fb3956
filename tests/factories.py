"""Small helpers that act like a user of the API: register, sign in, upload, wait."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.routes import ROUTERS

PASSWORD = "correct horse battery staple"

# The exam brief's census-like frame (mean age 42.5).
CENSUS_CSV = (
    b"age,income,education,workclass\n"
    b"25,30000,HS,Private\n30,45000,BS,Private\n35,55000,BS,Gov\n40,65000,MS,Private\n"
    b"45,75000,MS,Gov\n50,85000,PhD,Private\n55,95000,PhD,Self\n60,105000,PhD,Self\n"
)


@dataclass
class User:
    id: str
    email: str
    password: str
    tokens: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def api_routes() -> list[tuple[str, str]]:
    """Every (method, path template) the API serves, from its routers."""
    return [
        (method, route.path)
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods)
    ]


class Client:
    """A TestClient with user-level helpers; attribute access falls through to it."""

    def __init__(self, test_client: TestClient) -> None:
        self.http = test_client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.http, name)

    def register(self, email: str | None = None, password: str = PASSWORD) -> dict[str, Any]:
        email = email or f"user-{uuid.uuid4().hex[:12]}@example.com"
        response = self.http.post("/api/auth/register", json={"email": email, "password": password})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def login(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        response = self.http.post("/api/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def user(self, email: str | None = None) -> User:
        """A new account, signed in."""
        created = self.register(email)
        tokens = self.login(created["email"])
        return User(
            id=created["id"],
            email=created["email"],
            password=PASSWORD,
            tokens=tokens,
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        )

    def upload(
        self,
        user: User,
        content: bytes = CENSUS_CSV,
        filename: str = "census.csv",
        *,
        expect: int = 202,
        **fields: str,
    ) -> Any:
        response = self.http.post(
            "/api/datasets",
            headers=user.headers,
            files={"file": (filename, content, "application/octet-stream")},
            data=fields or None,
        )
        assert response.status_code == expect, response.text
        return response.json()

    def wait_dataset(self, user: User, dataset_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            response = self.http.get(f"/api/datasets/{dataset_id}", headers=user.headers)
            assert response.status_code == 200, response.text
            body = dict(response.json())
            if body["status"] != "processing":
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"dataset {dataset_id} still processing after {timeout}s")
            time.sleep(0.05)

    def ready_dataset(
        self, user: User, content: bytes = CENSUS_CSV, filename: str = "census.csv"
    ) -> dict[str, Any]:
        [dataset] = self.upload(user, content, filename)["data"]
        ready = self.wait_dataset(user, dataset["id"])
        assert ready["status"] == "ready", ready
        return ready

    def session(self, user: User, dataset_ids: list[str] | None = None, **body: Any) -> Any:
        response = self.http.post(
            "/api/sessions", headers=user.headers, json={"dataset_ids": dataset_ids or [], **body}
        )
        assert response.status_code == 201, response.text
        return response.json()
