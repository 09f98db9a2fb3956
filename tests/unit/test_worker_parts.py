"""Pieces of the worker that one table or one function now decides: the sandbox backends'
registry, the words a user reads when the language model fails, and the agent's tools."""

from __future__ import annotations

import typing
import uuid

import openai
import pytest
from pydantic import ValidationError

from api.config import SANDBOX_BACKENDS, Settings
from worker.agent import llm
from worker.agent.tools import TOOL_SPECS, TOOLS, Execution
from worker.sandbox import BACKENDS, Backend, backend_class, get_backend
from worker.sandbox.__main__ import main as sandbox_cli

try:  # the HTTP client the installed OpenAI SDK builds its errors from
    import httpx2 as http
except ImportError:  # pragma: no cover - older SDKs
    import httpx as http  # type: ignore[no-redef]


def test_the_registry_names_the_backends_the_settings_accept() -> None:
    assert (
        tuple(BACKENDS)
        == SANDBOX_BACKENDS
        == typing.get_args(Settings.model_fields["sandbox_backend"].annotation)
    )
    for name in BACKENDS:
        backend = backend_class(name)
        assert issubclass(backend, Backend)
        assert backend.name == name


def test_an_unknown_backend_is_refused_by_the_settings_the_registry_and_the_cli(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ValidationError, match="sandbox_backend"):
        Settings(sandbox_backend="firecracker")
    with pytest.raises(ValueError, match="unknown sandbox backend 'firecracker'"):
        get_backend(Settings(), "firecracker")
    with pytest.raises(SystemExit) as exited:
        sandbox_cli(["health", "--backend", "firecracker"])
    assert exited.value.code == 2
    assert "choose from process, docker, kubernetes" in capsys.readouterr().err.replace("'", "")


_REQUEST = http.Request("POST", "http://llm.internal/v1/chat/completions")


def _status(kind: type[openai.APIStatusError], code: int, message: str) -> openai.APIStatusError:
    return kind(message, response=http.Response(code, request=_REQUEST), body=None)


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (
            openai.APIConnectionError(request=_REQUEST),
            "could not be reached; check OPENAI_BASE_URL",
        ),
        (openai.APITimeoutError(request=_REQUEST), "did not answer in time"),
        (
            _status(openai.AuthenticationError, 401, "bad key"),
            "refused the API key (OPENAI_API_KEY)",
        ),
        (_status(openai.RateLimitError, 429, "slow down"), "rate-limiting Quarry"),
        (
            _status(openai.NotFoundError, 404, "The model `gpt-9` does not exist"),
            "answered with an error: The model `gpt-9` does not exist",
        ),
        (_status(openai.BadRequestError, 400, "x" * 1000), "answered with an error: " + "x" * 300),
    ],
)
def test_a_language_model_failure_tells_the_user_what_to_check(
    error: BaseException, said: str
) -> None:
    """The OpenAI SDK's own exceptions (as langchain-openai raises them), not look-alikes."""
    text = llm.error_text(error)
    assert text is not None
    assert said in text
    assert "x" * 301 not in text


def test_an_error_that_is_not_the_models_is_left_to_the_turn() -> None:
    assert llm.error_text(KeyError("run_id")) is None
    assert llm.error_text(ZeroDivisionError()) is None


def test_the_model_is_offered_exactly_the_tools_it_can_call() -> None:
    assert [spec["function"]["name"] for spec in TOOL_SPECS] == [tool.name for tool in TOOLS]
    assert [t.name for t in TOOLS] == ["list_datasets", "describe_dataset", "run_python"]
    describe = next(spec for spec in TOOL_SPECS if spec["function"]["name"] == "describe_dataset")
    assert describe["function"]["parameters"]["required"] == ["name"]
    assert "required" not in TOOL_SPECS[0]["function"]["parameters"]


def test_a_runs_artifact_carries_what_its_summary_says_as_data() -> None:
    rows = [[f"r{i}", i / 3] for i in range(40)]
    result = {
        "ok": True,
        "stdout": "hello\n" + "y" * 5000,
        "result": None,
        "error": None,
        "tables": [{"name": "out", "columns": ["k", "v"], "rows": rows, "total_rows": 40}],
    }
    done = Execution(id=uuid.uuid4(), result=result, charts=[{"title": "Chart 1"}])
    artifact = done.artifact()
    assert artifact["ok"] is True
    assert artifact["stdout"].startswith("hello\n")
    assert len(artifact["stdout"]) == 1500
    assert artifact["tables"][0]["rows"] == rows[:15]
    assert artifact["tables"][0]["total_rows"] == 40
    assert artifact["charts"] == ["Chart 1"]
    summary = done.summary()
    assert "table out (40 rows):" in summary
    assert "... (25 more rows)" in summary
