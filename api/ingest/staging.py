"""When an upload's staging folder goes: once no dataset of the upload is waiting for it
(every one converted, failed or deleted). The API calls this after a delete, the worker after
settling a conversion, the reaper after failing lost ones; the reaper also sweeps folders
that nothing recorded (worker/datasets.py, `remove_abandoned_uploads`)."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from api.models import Dataset, DatasetStatus
from api.storage import remove_tree, staging_dir


def waiting(db: Session, upload_id: uuid.UUID) -> bool:
    """Whether a dataset of the upload is still waiting for its conversion."""
    return bool(
        db.scalar(
            select(
                exists().where(
                    Dataset.upload_id == upload_id, Dataset.status == DatasetStatus.PROCESSING
                )
            )
        )
    )


def release(db: Session, data_dir: Path, upload_id: uuid.UUID) -> bool:
    """Remove the upload's staging folder unless a dataset still waits for it; whether it
    went. (A worker converting it meanwhile finds its datasets gone or settled, and keeps
    none of its output.)"""
    if waiting(db, upload_id):
        return False
    remove_tree(staging_dir(data_dir, upload_id))
    return True
