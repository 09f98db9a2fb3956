"""Before the API starts: wait for the database, then migrate it to the newest schema.

`python -m api.prestart` (compose runs it as a one-shot service, the chart as a hook Job).
`python -m api.prestart --wait` migrates nothing: it waits until someone else has brought
the schema to the newest revision (the chart's api and worker pods start with it).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from api.config import Settings, get_settings
from api.logs import configure_logging, get_logger

log = get_logger("quarry.prestart")
ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["url"] = url
    return config


def wait_for_database(settings: Settings, timeout_s: float = 60.0) -> None:
    if settings.is_embedded_database:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return
    engine = create_engine(settings.sqlalchemy_url, poolclass=NullPool)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"database unreachable after {timeout_s:.0f}s: {exc}"
                    ) from None
                log.info("waiting for the database", error=type(exc).__name__)
                time.sleep(1)
    finally:
        engine.dispose()


def migrate(settings: Settings) -> None:
    command.upgrade(alembic_config(settings.sqlalchemy_url), "head")


def at_head(settings: Settings) -> bool:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(alembic_config(settings.sqlalchemy_url)).get_heads())
    engine = create_engine(settings.sqlalchemy_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads()) == heads
    finally:
        engine.dispose()


def wait_for_migrations(settings: Settings, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not at_head(settings):
        if time.monotonic() > deadline:
            raise SystemExit(f"the schema is not at the newest revision after {timeout_s:.0f}s")
        log.info("waiting for migrations")
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    wait_for_database(settings)
    if "--wait" in args:
        wait_for_migrations(settings)
    else:
        migrate(settings)
    log.info("database ready", embedded=settings.is_embedded_database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
