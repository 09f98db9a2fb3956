"""docker-compose.yml, read as compose reads it (this lane runs no Docker engine): every
service healthy-checked on its documented port, started in the right order, secrets only
from the environment, app containers hardened, and the Docker socket only behind the proxy
(whose allow-list tests/integration/test_docker_proxy.py runs for real)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
ALL_SERVICES: dict[str, Any] = COMPOSE["services"]
# what `docker compose up` starts (the test runner has a profile of its own)
SERVICES = {k: v for k, v in ALL_SERVICES.items() if not v.get("profiles")}
ONE_SHOT = {"migrate", "runner"}
# the user-facing ports: fixed by default, each movable from .env
PORTS = {
    "api": ("API_HOST_PORT", 8000),
    "frontend": ("UI_HOST_PORT", 8501),
    "flower": ("FLOWER_HOST_PORT", 5555),
}
APP_SERVICES = ("migrate", "api", "worker", "frontend", "flower")


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return {str(k): str(v) for k, v in env.items()}


def test_the_documented_services_are_all_there() -> None:
    assert set(SERVICES) == {
        "postgres", "redis", "migrate", "api", "runner", "worker", "docker-proxy",
        "frontend", "flower",
    }  # fmt: skip


@pytest.mark.parametrize("name", sorted(set(SERVICES) - ONE_SHOT))
def test_every_long_running_service_has_a_healthcheck_and_restarts(name: str) -> None:
    service = SERVICES[name]
    assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert service.get("restart") == "unless-stopped"


@pytest.mark.parametrize(("name", "setting"), sorted(PORTS.items()))
def test_host_ports_are_the_documented_ones_and_movable(
    name: str, setting: tuple[str, int]
) -> None:
    variable, port = setting
    assert SERVICES[name]["ports"] == [f"${{{variable}:-{port}}}:{port}"]


def test_the_stores_listen_on_this_host_only_and_never_clash_with_a_local_server() -> None:
    """Redis has no password; neither it nor PostgreSQL is for other machines. A machine
    that already runs PostgreSQL or Redis on the standard ports used to stop `up -d` half
    way ("bind: address already in use"): by default Docker picks free host ports."""
    for name, variable, port in (
        ("postgres", "POSTGRES_HOST_PORT", 5432),
        ("redis", "REDIS_HOST_PORT", 6379),
    ):
        assert SERVICES[name]["ports"] == [f"127.0.0.1:${{{variable}:-}}:{port}"], name


@pytest.mark.parametrize("name", [*APP_SERVICES, "docker-proxy"])
def test_app_containers_are_hardened(name: str) -> None:
    """Read-only root, a private /tmp, no capabilities, no privilege gain: what
    docs/DEPLOYMENT.md promises (the stack was run healthy with exactly these)."""
    service = SERVICES[name]
    assert service["read_only"] is True
    assert service["tmpfs"] == ["/tmp"]
    assert service["cap_drop"] == ["ALL"]
    assert service["security_opt"] == ["no-new-privileges:true"]
    assert not service.get("cap_add")
    assert not service.get("privileged")


def test_every_image_is_built_on_the_chosen_base() -> None:
    """PYTHON_IMAGE (a local base where no registry answers) reaches every build."""
    for name, service in ALL_SERVICES.items():
        if "build" in service:
            args = service["build"]["args"]
            assert args["PYTHON_IMAGE"] == "${PYTHON_IMAGE:-python:3.11.11-slim-bookworm}", name


def test_the_one_shot_migration_is_not_reported_unhealthy_after_it_succeeds() -> None:
    """It runs the API image, whose HEALTHCHECK polls a server migrate never starts."""
    assert SERVICES["migrate"]["image"] == SERVICES["api"]["image"]
    assert SERVICES["migrate"]["healthcheck"] == {"disable": True}


def test_one_shot_services_do_not_restart() -> None:
    for name in ONE_SHOT:
        assert SERVICES[name]["restart"] == "no"


def test_services_start_in_dependency_order() -> None:
    def after(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in SERVICES[name]["depends_on"].items()}

    assert after("migrate") == {"postgres": "service_healthy"}
    for name in ("api", "worker"):
        assert after(name)["migrate"] == "service_completed_successfully"
        assert after(name)["redis"] == "service_healthy"
    assert after("worker")["runner"] == "service_completed_successfully"
    assert after("worker")["docker-proxy"] == "service_healthy"
    assert after("frontend") == {"api": "service_healthy"}


SECRET = re.compile(r"PASSWORD|SECRET|TOKEN|BASIC_AUTH|API_KEY", re.I)


def test_no_secret_is_written_into_the_file() -> None:
    """Secrets come from .env (make compose-env), and a missing one stops compose at once."""
    for name, service in SERVICES.items():
        for key, value in _env(service).items():
            if SECRET.search(key) and name != "docker-proxy":  # its SECRETS=0 is an API switch
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value), (name, key)
        url = _env(service).get("DATABASE_URL", "")
        if url:
            assert "${POSTGRES_PASSWORD:?" in url, name


def test_the_docker_socket_is_only_behind_the_proxy() -> None:
    for name, service in SERVICES.items():
        mounts = " ".join(str(v) for v in service.get("volumes", []))
        if name == "docker-proxy":
            assert "/var/run/docker.sock:/var/run/docker.sock:ro" in mounts
        else:
            assert "docker.sock" not in mounts, name
    proxy = SERVICES["docker-proxy"]
    config = "./compose/docker-proxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"
    assert config in proxy["volumes"]
    assert proxy["command"][-1] == "/usr/local/etc/haproxy/haproxy.cfg"
    assert (ROOT / "compose" / "docker-proxy.cfg").is_file()
    assert "ports" not in proxy
    assert COMPOSE["networks"]["docker-api"]["internal"] is True
    on_api_network = [n for n, s in SERVICES.items() if "docker-api" in s.get("networks", [])]
    assert sorted(on_api_network) == ["docker-proxy", "worker"]
    worker = _env(SERVICES["worker"])
    assert worker["SANDBOX_BACKEND"] == "docker"
    assert worker["SANDBOX_DOCKER_URL"] == "tcp://docker-proxy:2375"
    assert worker["SANDBOX_DOCKER_PULL"] == "false"  # the proxy refuses pulls


def test_data_lives_in_named_volumes() -> None:
    assert set(COMPOSE["volumes"]) == {"postgres-data", "redis-data", "quarry-data"}
    assert "postgres-data:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
    for name in ("api", "worker"):
        assert "quarry-data:/data" in SERVICES[name]["volumes"]
    # the worker's bind mounts for sandboxes name the volume's host path: its name is fixed
    assert COMPOSE["volumes"]["quarry-data"]["name"] == "quarry-data"


def test_the_app_runs_in_production_mode_on_compose_services() -> None:
    api = _env(SERVICES["api"])
    assert api["QUARRY_ENV"] == "production"
    assert api["REDIS_URL"] == "redis://redis:6379/0"
    assert api["DATABASE_URL"].endswith("@postgres:5432/quarry")
    assert _env(SERVICES["frontend"])["QUARRY_API_URL"] == "http://api:8000"


@pytest.mark.parametrize("component", ["api", "worker", "frontend", "runner"])
def test_each_image_runs_as_a_fixed_non_root_user_from_a_pinned_base(component: str) -> None:
    dockerfile = (ROOT / component / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+$", dockerfile, re.M)
    assert "USER 10001:10001" in dockerfile
    assert "--only-binary=:all:" in dockerfile  # wheels only: no compiler in the image
    if component != "runner":
        assert "HEALTHCHECK" in dockerfile


def test_env_example_documents_the_compose_secrets() -> None:
    example = (ROOT / ".env.example").read_text()
    for key in ("POSTGRES_PASSWORD", "JWT_SECRET_KEY", "FLOWER_BASIC_AUTH"):
        assert re.search(rf"^{key}=$", example, re.M), key  # present, and empty


def test_the_test_runner_gets_namespaces_only_under_its_own_profile() -> None:
    """The process sandbox under test needs CAP_SYS_ADMIN and Docker's seccomp filter and
    /proc masking lifted; `privileged` (every capability, every device) was refused by a
    host whose bounding set lacks one ("unable to apply caps") and is more than needed."""
    tests = ALL_SERVICES["tests"]
    assert tests["profiles"] == ["test"]
    assert "privileged" not in tests
    assert tests["cap_add"] == ["SYS_ADMIN"]
    assert "seccomp=unconfined" in tests["security_opt"]
    assert "systempaths=unconfined" in tests["security_opt"]
    assert not any(s.get("privileged") or s.get("cap_add") for s in SERVICES.values())
    env = _env(tests)
    assert env["QUARRY_TEST_DATABASE_URL"].endswith("@postgres:5432/postgres")
    assert "${POSTGRES_PASSWORD:?" in env["QUARRY_TEST_DATABASE_URL"]
    makefile = (ROOT / "Makefile").read_text()
    assert "docker compose --profile test run --rm --build tests" in makefile
    assert tests["init"] is True  # pytest is not PID 1: orphaned processes get reaped


def test_the_test_image_matches_a_developer_checkout_and_caches_its_dependencies() -> None:
    """`make test-docker` as it failed: no .venv for the Makefile and the SETUP doc-tests,
    Playwright's driver without libatomic1, every dependency reinstalled on any edit."""
    dockerfile = (ROOT / "tests" / "Dockerfile").read_text()
    assert "libatomic1" in dockerfile
    assert "python -m venv /src/.venv" in dockerfile
    assert (
        dockerfile.rstrip().splitlines()[-1].startswith('CMD [".venv/bin/python", "-m", "pytest"')
    )
    # the dependencies from pyproject.toml alone, before the rest of the source arrives
    assert (
        dockerfile.index("COPY pyproject.toml /src/pyproject.toml")
        < dockerfile.index("-r /tmp/requirements.txt")
        < dockerfile.index("COPY . /src")
    )
    assert "--no-deps -e ." in dockerfile
    assert ".installed-$(cksum < pyproject.toml | cut -d" in dockerfile  # the Makefile's stamp


def test_the_ui_image_installs_what_the_ui_imports_and_nothing_else() -> None:
    """The frontend image takes only UI_DEPENDENCIES from pyproject.toml: every third-party
    module the UI imports must be among them, and each must be a project dependency."""
    import ast
    import sys
    import tomllib

    dockerfile = (ROOT / "frontend" / "Dockerfile").read_text()
    found = re.search(r'^ARG UI_DEPENDENCIES="([^"]+)"$', dockerfile, re.M)
    assert found
    chosen = set(found.group(1).split())
    imported = set()
    for path in (ROOT / "frontend").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"frontend", "__future__"}
    assert third_party == chosen, "UI_DEPENDENCIES in frontend/Dockerfile"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() for d in deps}  # type: ignore[union-attr]
    assert chosen <= names
