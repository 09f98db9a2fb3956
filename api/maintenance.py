"""Housekeeping that keeps the token tables small.

Celery beat runs it hourly on the `maintenance` queue (worker.tasks.purge_expired_tokens);
`python -m api.maintenance` runs it once, by hand or from cron. Expired rows are useless:
an expired token fails its signature check before any table is consulted, so dropping them
changes no answer.
"""

from __future__ import annotations

import sys
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from api.config import get_settings
from api.db import make_engine, make_sessionmaker, utcnow
from api.logs import configure_logging, get_logger
from api.models import RefreshToken, RevokedAccessToken

log = get_logger("quarry.maintenance")


def purge_expired_tokens(db: Session, now: datetime | None = None) -> dict[str, int]:
    now = now or utcnow()
    revoked = db.execute(delete(RevokedAccessToken).where(RevokedAccessToken.expires_at < now))
    refresh = db.execute(delete(RefreshToken).where(RefreshToken.expires_at < now))
    db.commit()
    counts = {
        "revoked_access_tokens": revoked.rowcount,  # type: ignore[attr-defined]
        "refresh_tokens": refresh.rowcount,  # type: ignore[attr-defined]
    }
    log.info("expired tokens purged", **counts)
    return counts


def main() -> int:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    engine = make_engine(settings)
    try:
        with make_sessionmaker(engine)() as db:
            purge_expired_tokens(db)
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
