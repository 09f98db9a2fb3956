"""Where Quarry keeps files under DATA_DIR. Paths are built from ids, never from names a
user chose."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path


def dataset_dir(data_dir: Path, user_id: uuid.UUID, dataset_id: uuid.UUID) -> Path:
    return data_dir / "datasets" / user_id.hex / dataset_id.hex


def dataset_file(data_dir: Path, user_id: uuid.UUID, dataset_id: uuid.UUID) -> Path:
    """The Parquet copy: downloads and previews."""
    return dataset_dir(data_dir, user_id, dataset_id) / "data.parquet"


def dataset_arrow_file(data_dir: Path, user_id: uuid.UUID, dataset_id: uuid.UUID) -> Path:
    """The Arrow IPC copy the sandbox memory-maps (absent for datasets converted before
    it existed: use the Parquet copy then)."""
    return dataset_dir(data_dir, user_id, dataset_id) / "data.arrow"


def workspace_dir(data_dir: Path, user_id: uuid.UUID, session_id: uuid.UUID) -> Path:
    """The session's kept variables (Arrow / JSON files and an index)."""
    return data_dir / "workspaces" / user_id.hex / session_id.hex


def uploads_dir(data_dir: Path) -> Path:
    return data_dir / "uploads"


def staging_dir(data_dir: Path, upload_id: uuid.UUID) -> Path:
    """Where an upload waits for its conversion (every table of the upload shares it)."""
    return uploads_dir(data_dir) / upload_id.hex


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
