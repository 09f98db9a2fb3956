"""The real-engine lane of the docker and kubernetes sandbox backends.

These tests run snippets through `DockerBackend` when a Docker daemon answers (building the
runner image from runner/Dockerfile if it is missing) and through `KubernetesBackend` when a
kubeconfig (or an in-cluster service account) is present. Where neither exists, as on the
machines Quarry's CI runs on, every test here is skipped with its reason printed, and the
unit tests (tests/unit/test_sandbox_docker.py with a fake client, and
tests/unit/test_sandbox_kubernetes.py with schema validation and scripted API answers) stand
in for them.

Environment: SANDBOX_IMAGE (default quarry-runner:latest), SANDBOX_NAMESPACE and, for the
dataset test on a cluster, QUARRY_E2E_DATA_DIR (where this process sees the data volume that
SANDBOX_DATA_CLAIM names).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.config import Settings
from worker.sandbox import SandboxUnavailable
from worker.sandbox.docker import DockerBackend, DockerConfig, container_options

REPO = Path(__file__).resolve().parents[2]
LIMITS = {"timeout_s": 10, "memory_mb": 256, "max_output_bytes": 1 << 20}
# What the container's own OS layer looks like from inside (run with the backend's options,
# outside the runner's language policy, so it is the container being tested).
PROBE = r"""
import json, os, socket
found = {"uid": os.getuid(), "gid": os.getgid()}
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2)
    found["network"] = "reached"
except OSError as exc:
    found["network"] = type(exc).__name__
found["mounts"] = {}
for line in open("/proc/self/mounts"):
    _, point, _, options = line.split()[:4]
    if point in ("/", "/tmp", "/job/dataset-0"):
        found["mounts"][point] = options.split(",")
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
found["cap_eff"] = status["CapEff"].strip()
found["no_new_privs"] = status.get("NoNewPrivs", "").strip()
found["dataset"] = open("/job/dataset-0").read()
with open("/tmp/ok", "w") as fh:
    fh.write("ok")
print(json.dumps(found))
"""


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# --- docker --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker daemon answers here ({type(exc).__name__}: {exc})")
    image = settings().sandbox_image
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        try:
            client.images.build(path=str(REPO), dockerfile="runner/Dockerfile", tag=image, rm=True)
        except docker.errors.DockerException as exc:
            pytest.skip(f"the runner image {image} is missing and could not be built: {exc}")
    yield client
    client.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "sales.csv").write_text("region,amount\nnorth,1\nsouth,2\nnorth,3\n")
    return root


def docker_backend(client: Any, data_dir: Path) -> DockerBackend:
    config = DockerConfig(image=settings().sandbox_image, data_dir=str(data_dir), limits=LIMITS)
    return DockerBackend(client, config)


def sales_job(data_dir: Path, code: str) -> dict[str, Any]:
    return {
        "code": code,
        "datasets": [{"name": "df", "path": str(data_dir / "sales.csv"), "format": "csv"}],
    }


def test_docker_runs_a_snippet_on_a_dataset(docker_client: Any, data_dir: Path) -> None:
    backend = docker_backend(docker_client, data_dir)
    code = "print('rows', len(df))\ndf.groupby('region')['amount'].sum().to_dict()"
    result = backend.run(sales_job(data_dir, code))

    assert result["ok"] is True, result["error"]
    assert result["stdout"] == "rows 3\n"
    assert result["result"] == "{'north': 4, 'south': 2}"
    assert docker_client.containers.list(all=True, filters={"label": "quarry.dev/sandbox"}) == []


def test_docker_stops_a_snippet_at_its_deadline(docker_client: Any, data_dir: Path) -> None:
    backend = docker_backend(docker_client, data_dir)
    result = backend.run({"code": "while True:\n    pass", "limits": {"timeout_s": 2}})

    assert result["error"]["type"] == "TimeoutError"


@pytest.mark.parametrize("pool", [0, 1], ids=["cold", "pooled"])
def test_docker_stops_a_snippet_at_its_memory_limit(
    docker_client: Any, data_dir: Path, pool: int
) -> None:
    backend = pooled_backend(docker_client, data_dir, pool) if pool else None
    backend = backend or docker_backend(docker_client, data_dir)
    try:
        if pool:
            _wait_ready(backend)
        result = backend.run({"code": "import numpy as np\nx = np.ones(10**8)\nx.sum()"})
    finally:
        backend.close()
    assert result["error"]["type"] == "MemoryError"


def test_docker_kills_what_ignores_its_deadline(
    docker_client: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process the runner's own timer cannot stop (here: one that never reads its job)
    is killed by the backend at timeout + grace, and removed."""
    monkeypatch.setattr(
        "worker.sandbox.docker.RUNNER_COMMAND", ["python", "-c", "import time; time.sleep(600)"]
    )
    backend = docker_backend(docker_client, data_dir)
    backend.config = dataclasses.replace(backend.config, start_grace_s=1.0)
    result = backend.run({"code": "", "limits": {"timeout_s": 2}})

    assert result["error"]["type"] == "TimeoutError"
    assert result["duration_ms"] < 10_000
    assert docker_client.containers.list(all=True, filters={"label": "quarry.dev/sandbox"}) == []


def test_docker_caps_the_output(
    docker_client: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Output over the cap (the runner caps its own; this stands in for one that does not)
    is cut off, the container killed and removed, promptly."""
    flood = "import sys; sys.stdin.read(); sys.stdout.write('x' * (5 << 20))"
    monkeypatch.setattr("worker.sandbox.docker.RUNNER_COMMAND", ["python", "-c", flood])
    backend = docker_backend(docker_client, data_dir)
    # A 4 MB job also checks that a large job gets through stdin whole.
    result = backend.run({"code": "x" * (4 << 20)})

    assert result["error"]["type"] == "OutputTooLarge"
    assert result["duration_ms"] < 10_000
    assert docker_client.containers.list(all=True, filters={"label": "quarry.dev/sandbox"}) == []


def pooled_backend(client: Any, data_dir: Path, size: int = 1) -> DockerBackend:
    config = DockerConfig(
        image=settings().sandbox_image, data_dir=str(data_dir), limits=LIMITS, pool_size=size
    )
    return DockerBackend(client, config)


def _wait_ready(backend: DockerBackend, count: int = 1) -> None:
    assert backend._pool is not None
    backend._pool.start()
    deadline = time.monotonic() + 120
    while backend._pool.stats()["pool_ready"] < count:
        assert time.monotonic() < deadline, backend._pool.stats()
        time.sleep(0.1)


def _sandboxes(client: Any) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": "quarry.dev/sandbox"}))


def test_docker_pool_sees_nothing_before_its_job_and_its_files_after(
    docker_client: Any, data_dir: Path
) -> None:
    """A container started ahead: from inside, `/job` is an empty read-only folder until the
    job arrives; the job then reads its dataset there, and nothing is left afterwards."""
    backend = pooled_backend(docker_client, data_dir)
    try:
        _wait_ready(backend)
        [waiting] = _sandboxes(docker_client)
        assert waiting.labels["quarry.dev/sandbox-pool"] == "true"
        [mount] = waiting.attrs["Mounts"]
        assert (mount["Destination"], mount["RW"]) == ("/job", False)
        seen = waiting.exec_run(["python", "-c", "import os; print(os.listdir('/job'))"])
        assert seen.output.decode().strip() == "[]", seen.output
        result = backend.run(sales_job(data_dir, "df.groupby('region')['amount'].sum().to_dict()"))
        assert result["ok"] is True, result["error"]
        assert result["result"] == "{'north': 4, 'south': 2}"
        again = backend.run(sales_job(data_dir, "len(df)"))  # a second job: another container
        assert again["result"] == "3"
    finally:
        backend.close()
    assert _sandboxes(docker_client) == []
    assert os.listdir(data_dir / "sandbox-slots") == []
    assert (data_dir / "sales.csv").read_text().startswith("region,amount")


def test_docker_pool_skips_a_container_that_ended_while_waiting(
    docker_client: Any, data_dir: Path
) -> None:
    """Killed while it waited (an operator, the engine): its job goes elsewhere, at once."""
    backend = pooled_backend(docker_client, data_dir, size=2)
    try:
        _wait_ready(backend, 2)
        first = _sandboxes(docker_client)[0]
        first.kill()
        first.wait(timeout=30)
        started = time.monotonic()
        result = backend.run(sales_job(data_dir, "len(df)"))
        assert time.monotonic() - started < 5
    finally:
        backend.close()
    assert result["result"] == "3"
    assert _sandboxes(docker_client) == []


def test_docker_pool_stops_a_snippet_at_its_deadline(docker_client: Any, data_dir: Path) -> None:
    backend = pooled_backend(docker_client, data_dir)
    try:
        _wait_ready(backend)
        started = time.monotonic()
        result = backend.run({"code": "while True:\n    pass", "limits": {"timeout_s": 2}})
        assert time.monotonic() - started < 8
    finally:
        backend.close()
    assert result["error"]["type"] == "TimeoutError"
    assert _sandboxes(docker_client) == []


def test_docker_container_is_isolated(docker_client: Any, data_dir: Path) -> None:
    """The backend's own container options, probed from inside by plain Python."""
    config = DockerConfig(image=settings().sandbox_image)
    options = container_options(config, LIMITS, [(str(data_dir / "sales.csv"), "/job/dataset-0")])
    options.update(
        entrypoint=["python", "-c", PROBE],
        command=None,
        stdin_open=False,
        log_config={"type": "json-file"},  # the probe's answer is read from the log
    )
    container = docker_client.containers.create(**options)
    try:
        container.start()
        assert container.wait(timeout=60)["StatusCode"] == 0, container.logs()
        found = json.loads(container.logs(stdout=True, stderr=False))
    finally:
        container.remove(force=True)

    assert (found["uid"], found["gid"]) == (10001, 10001)
    assert found["network"] != "reached"
    mounts = found["mounts"]
    assert "ro" in mounts["/"]
    assert "ro" in mounts["/job/dataset-0"]
    assert {"rw", "noexec", "nosuid", "nodev"} <= set(mounts["/tmp"])
    assert found["cap_eff"] == "0000000000000000"
    assert found["no_new_privs"] == "1"
    assert found["dataset"].startswith("region,amount")


# --- kubernetes ----------------------------------------------------------------------------------
def _kubeconfig_present() -> str | None:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "in-cluster"
    for path in [*os.environ.get("KUBECONFIG", "").split(os.pathsep), "~/.kube/config"]:
        if path and Path(path).expanduser().is_file():
            return path
    return None


@pytest.fixture(scope="module")
def kube_settings() -> Settings:
    if _kubeconfig_present() is None:
        pytest.skip("no kubeconfig (KUBECONFIG or ~/.kube/config) and not in a cluster")
    return settings(data_dir=os.environ.get("QUARRY_E2E_DATA_DIR", ".data"))


def kube_run(kube_settings: Settings, job: dict[str, Any]) -> dict[str, Any]:
    from worker.sandbox.kubernetes import KubernetesBackend

    backend = KubernetesBackend.from_settings(kube_settings)
    health = backend.health()
    if not health["ok"]:
        pytest.skip(f"the cluster does not answer for namespace {health['namespace']}: {health}")
    try:
        return backend.run(job)
    except SandboxUnavailable as exc:
        if any(word in str(exc) for word in ("ErrImagePull", "ImagePullBackOff", "NeverPull")):
            pytest.skip(
                f"the cluster cannot pull {kube_settings.sandbox_image} ({exc}); load it, e.g. "
                f"`kind load docker-image {kube_settings.sandbox_image}`"
            )
        raise


def test_kubernetes_runs_a_snippet(kube_settings: Settings) -> None:
    result = kube_run(kube_settings, {"code": "print('hi')\n6 * 7", "limits": LIMITS})

    assert result["ok"] is True, result["error"]
    assert result["stdout"] == "hi\n"
    assert result["result"] == "42"


def test_kubernetes_stops_a_snippet_at_its_deadline(kube_settings: Settings) -> None:
    result = kube_run(
        kube_settings, {"code": "while True:\n    pass", "limits": {**LIMITS, "timeout_s": 2}}
    )
    assert result["error"]["type"] == "TimeoutError"


def test_kubernetes_mounts_a_dataset(kube_settings: Settings) -> None:
    if not os.environ.get("QUARRY_E2E_DATA_DIR"):
        pytest.skip("QUARRY_E2E_DATA_DIR (this process's view of SANDBOX_DATA_CLAIM) is not set")
    data_dir = Path(os.environ["QUARRY_E2E_DATA_DIR"])
    path = data_dir / "e2e" / "sales.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("region,amount\nnorth,1\nsouth,2\n")
    job = {
        "code": "int(df['amount'].sum())",
        "datasets": [{"name": "df", "path": str(path), "format": "csv"}],
        "limits": LIMITS,
    }
    result = kube_run(kube_settings, job)

    assert result["ok"] is True, result["error"]
    assert result["result"] == "3"
