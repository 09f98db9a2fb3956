"""Quarry's settings: one object, read from the environment and `.env`."""

from __future__ import annotations

import os
import secrets
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    computed_field,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Values people paste from tutorials; refusing them in production is cheap insurance.
PLACEHOLDER_SECRETS = frozenset(
    {"changethis", "change-me", "changeme", "secret", "your-secret-key", "dev", "development"}
)
MIN_PRODUCTION_SECRET_BYTES = 32


# The sandbox backends (worker/sandbox: BACKENDS registers the same names, in this order).
SandboxBackend = Literal["process", "docker", "kubernetes"]
SANDBOX_BACKENDS: tuple[str, ...] = get_args(SandboxBackend)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        populate_by_name=True,
    )

    quarry_env: Literal["development", "production"] = "development"
    debug: bool = False
    log_level: str = "INFO"
    # None: JSON when stderr is not a terminal, coloured console otherwise.
    log_json: bool | None = None

    data_dir: Path = Path(".data")
    # Empty means "the embedded SQLite file under data_dir".
    database_url: str = ""
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_pre_ping: bool = False
    # Hot reads run as server-side prepared statements; turn off behind a pooler that does
    # not keep sessions (PgBouncer in transaction mode).
    db_prepared_statements: bool = True
    # LISTEN for new run events (one connection per API process); off behind a pooler
    # that cannot hold a LISTEN (PgBouncer in transaction mode): streams then poll
    run_events_listen: bool = True
    # Reads run on the event loop (see api/deps.py): none may hold it longer than this.
    db_read_timeout_ms: int = Field(default=5000, ge=100)
    redis_url: str | None = None
    redis_prefix: str = "quarry:"

    jwt_secret_key: SecretStr | None = None
    access_token_ttl_minutes: int = Field(default=15, ge=1, le=24 * 60)
    refresh_token_ttl_days: int = Field(default=7, ge=1, le=90)
    # `POST /api/auth/fork`: a root family's token (the browser's cookie) spent this recently
    # may fork again (a browser restoring several tabs at once sends the same cookie from
    # each); later, or a forked family's token, it is reuse.
    refresh_fork_grace_seconds: int = Field(default=30, ge=0, le=300)

    # argon2id cost; argon2-cffi's RFC 9106 "low memory" profile by default. A stored hash made
    # with other parameters is upgraded on the next successful login.
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_cost_kib: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)
    password_min_length: int = Field(default=10, ge=8, le=64)

    # Login throttling: failed attempts within the window, per account and per client address.
    login_window_seconds: int = Field(default=900, ge=1)
    login_max_failures_per_account: int = Field(default=5, ge=1)
    login_max_failures_per_ip: int = Field(default=30, ge=1)
    register_max_per_ip_per_hour: int = Field(default=20, ge=1)

    cors_origins: Annotated[list[str], NoDecode] = ["http://localhost:8501"]
    # Bodies of ordinary JSON requests; uploads have their own cap.
    max_request_body_bytes: int = Field(default=1_048_576, ge=1024)

    max_upload_mb: int = Field(default=200, ge=1)
    max_dataset_columns: int = Field(default=2000, ge=1)
    max_json_document_mb: int = Field(default=100, ge=1)
    zip_max_entries: int = Field(default=100, ge=1)
    zip_max_uncompressed_mb: int = Field(default=2048, ge=1)
    zip_max_ratio: int = Field(default=100, ge=2)
    # Memory cap of the process that parses an uploaded file (it is untrusted input).
    ingest_memory_mb: int = Field(default=2048, ge=256)
    ingest_timeout_seconds: int = Field(default=1800, ge=1)

    # The sandbox (every snippet the agent writes runs there; see docs/SECURITY.md)
    sandbox_backend: SandboxBackend = "process"
    sandbox_mode: Literal["warm", "cold"] = "warm"
    sandbox_pool_size: int = Field(default=2, ge=1, le=64)
    sandbox_allow_weak_isolation: bool = False
    sandbox_uid_base: int = Field(default=61000, ge=1000)
    sandbox_timeout_s: int = Field(default=30, ge=1, le=3600)
    sandbox_memory_mb: int = Field(default=1024, ge=64)
    sandbox_max_output_mb: int = Field(default=8, ge=1, le=256)
    sandbox_cpus: float = Field(default=1.0, gt=0)
    sandbox_max_processes: int = Field(default=64, ge=1)
    sandbox_image: str = "quarry-runner:latest"
    sandbox_docker_url: str | None = None  # unset: DOCKER_HOST or the local socket
    # DATA_DIR as the Docker engine's host sees it, when the worker itself runs in a
    # container (compose): bind mounts name host paths, not the worker's
    sandbox_docker_host_data_dir: str | None = None
    # e.g. "runsc" (gVisor): a second kernel between snippets and the host's
    sandbox_docker_runtime: str | None = None
    # Pull the runner image when the engine lacks it (compose builds it: no pull, and the
    # socket proxy refuses image pulls anyway)
    sandbox_docker_pull: bool = True
    sandbox_namespace: str = "quarry-sandbox"
    sandbox_data_claim: str = "quarry-data"  # the PVC holding DATA_DIR, for sandbox Jobs
    # Sandbox Jobs' seccomp profile: the runtime's default, or Quarry's own installed on the
    # nodes, as "Localhost:<path under the kubelet's seccomp folder>" (docs/SECURITY.md)
    sandbox_seccomp_profile: str = Field(
        default="RuntimeDefault",
        pattern=r"^(RuntimeDefault|Localhost:[A-Za-z0-9._-][A-Za-z0-9._/-]*)$",
    )

    # The LLM: any OpenAI-compatible endpoint; without a key, Quarry's offline model
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("openai_api_key", "llm_api_key")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("openai_base_url", "llm_api_base")
    )
    llm_model: str = "gpt-4o-mini"
    llm_temperature: float = Field(default=0.0, ge=0, le=2)
    llm_timeout_s: float = Field(default=60.0, gt=0)
    llm_max_retries: int = Field(default=2, ge=0)
    # "module:callable" returning a LangChain chat model: another provider, or a scripted
    # model in tests. Overrides the two above.
    llm_factory: str | None = None
    # US dollars per million tokens (prompt, completion), for the cost shown per run
    llm_price_prompt_per_mtok: float = Field(default=0.15, ge=0)
    llm_price_completion_per_mtok: float = Field(default=0.60, ge=0)

    # Agent turns
    agent_max_tool_calls: int = Field(default=8, ge=1, le=50)
    agent_max_fix_attempts: int = Field(default=3, ge=0, le=10)
    agent_history_messages: int = Field(default=60, ge=4)  # sent to the model per call
    turn_time_limit_s: int = Field(default=600, ge=10)  # soft limit; hard = soft + 30 s
    run_heartbeat_s: float = Field(default=5.0, gt=0)
    run_stale_after_s: float = Field(default=45.0, gt=0)  # running, no heartbeat: lost
    # queued while workers consume its queue, nobody took it: failed (a backlog this long
    # means the deployment needs more workers; time without any worker does not count)
    run_queued_timeout_s: float = Field(default=600.0, gt=0)
    # queued, its queue empty in the broker, not claimed for this long: the message was lost
    # (broker restarted or flushed, a worker died holding it) and the reaper sends it again
    run_claim_timeout_s: float = Field(default=20.0, gt=0)
    run_max_resends: int = Field(default=3, ge=0)
    # an upload nobody started converting (a backlog of big files can be long)
    dataset_queued_timeout_s: float = Field(default=3600.0, gt=0)
    reaper_interval_s: float = Field(default=5.0, gt=0)
    # each worker's main process says it is alive this often (worker_heartbeats table); one
    # silent for three intervals is dead: /readyz and the waiting notice say so
    worker_heartbeat_s: float = Field(default=10.0, gt=0)
    max_active_runs_per_user: int = Field(default=3, ge=1)
    turns_per_minute_per_user: int = Field(default=20, ge=1)
    daily_token_budget_per_user: int = Field(default=0, ge=0)  # 0: no budget
    worker_metrics_port: int = Field(default=9808, ge=0)  # 0: no metrics endpoint

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @model_validator(mode="after")
    def _refuse_weak_production(self) -> Settings:
        if self.quarry_env != "production":
            return self
        problems = []
        key = self.jwt_secret_key.get_secret_value() if self.jwt_secret_key else ""
        if not key:
            problems.append("JWT_SECRET_KEY is not set")
        elif key.lower() in PLACEHOLDER_SECRETS:
            problems.append("JWT_SECRET_KEY is a placeholder value")
        elif len(key.encode()) < MIN_PRODUCTION_SECRET_BYTES:
            problems.append(
                f"JWT_SECRET_KEY is shorter than {MIN_PRODUCTION_SECRET_BYTES} bytes "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        if "*" in self.cors_origins:
            problems.append("CORS_ORIGINS contains '*'; list the UI's origins instead")
        if self.debug:
            problems.append("DEBUG is on")
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Plain postgres URLs (as Heroku-style platforms hand them out) go through psycopg2.
            for prefix in ("postgres://", "postgresql://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg2://" + url[len(prefix) :]
            return url
        return f"sqlite:///{(self.data_dir / 'quarry.db').resolve()}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def is_embedded_database(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    def jwt_key(self) -> str:
        """The signing key. Development without one gets a random key kept under data_dir,
        so that a restart of `make demo` does not sign everybody out."""
        if self.jwt_secret_key and self.jwt_secret_key.get_secret_value():
            return self.jwt_secret_key.get_secret_value()
        return _dev_jwt_key(self.data_dir.resolve())


@lru_cache(maxsize=8)
def _dev_jwt_key(data_dir: Path) -> str:
    path = data_dir / "dev-jwt-secret"
    warnings.warn(
        f"JWT_SECRET_KEY is not set: using a development key stored in {path}. "
        "Set JWT_SECRET_KEY before exposing Quarry to anyone.",
        stacklevel=3,
    )
    if not path.exists():
        # Several processes (API, worker) may start at once: write aside, then link, which
        # fails if another process won; everybody then reads the winner's key.
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".dev-jwt-secret.{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
