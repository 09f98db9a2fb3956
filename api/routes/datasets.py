"""Datasets: upload (streamed, checked, then converted by a worker on the `datasets` queue),
list, inspect, preview, download, rename, delete."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy import delete, select, update
from sqlalchemy.orm import defer

from api.audit import audit
from api.crud import get_owned, page
from api.db import new_id, utcnow
from api.deps import AppState, CurrentUser, PageDep, Principal, SessionDep, StateDep
from api.errors import APIError, Unprocessable, request_id_of
from api.ingest import staging
from api.ingest.archive import ZipLimits
from api.ingest.export import csv_chunks, preview
from api.ingest.sniff import Limits, inspect_upload
from api.ingest.tables import SourceTable
from api.ingest.upload import ReceivedUpload, receive_upload
from api.models import Dataset, DatasetStatus, SessionDataset
from api.queue import CONVERT_UPLOAD
from api.schemas import (
    NO_NUL_PATTERN,
    TITLE_MAX,
    DatasetDetail,
    DatasetPreview,
    DatasetPublic,
    DatasetUpdate,
    Page,
    UploadResult,
    text_problem,
)
from api.storage import dataset_dir, dataset_file, remove_tree, staging_dir

router = APIRouter(prefix="/api/datasets", tags=["datasets"])

_SIGNED_IN: dict[int | str, dict[str, Any]] = {401: {"description": "Not signed in"}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    **_SIGNED_IN,
    404: {"description": "No such dataset (or not yours)"},
}
_NOT_READY: dict[int | str, dict[str, Any]] = {
    409: {"description": "Still processing, or failed"},
    410: {"description": "The dataset's file is missing from storage"},
}
# Form fields of an upload, as PATCH /api/datasets/{id} limits them (the multipart parser
# caps a text field at 10 000 bytes: 2 500 characters of up to 4 bytes each).
NAME_MAX = TITLE_MAX
UPLOAD_DESCRIPTION_MAX = 2_500

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV, TSV, JSON, JSON Lines, Excel, Parquet, or a "
                            "ZIP of such files",
                        },
                        "name": {
                            "type": "string",
                            "maxLength": NAME_MAX,
                            "pattern": NO_NUL_PATTERN,
                            "description": "Dataset name (one table); empty: the file's name",
                        },
                        "description": {
                            "type": "string",
                            "maxLength": UPLOAD_DESCRIPTION_MAX,
                            "pattern": NO_NUL_PATTERN,
                        },
                    },
                }
            }
        },
    }
}


def _limits(state: AppState) -> Limits:
    s = state.settings
    return Limits(
        max_columns=s.max_dataset_columns,
        max_json_bytes=s.max_json_document_mb << 20,
        zip=ZipLimits(s.zip_max_entries, s.zip_max_uncompressed_mb << 20, s.zip_max_ratio),
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Upload a data file (converted in the background)",
    openapi_extra=_UPLOAD_BODY,
    responses={
        **_SIGNED_IN,
        413: {"description": "Over the upload size cap, or a ZIP that would expand too far"},
        415: {"description": "Not multipart/form-data, or not a supported file type"},
        422: {
            "description": "No file, empty, unreadable, too many columns, unsafe archive, "
            "a name or description too long or with NUL..."
        },
    },
)
async def upload_dataset(request: Request, state: StateDep, user: CurrentUser) -> UploadResult:
    """Streams the file to disk, checks its content (not just its extension) and answers
    with one dataset per table found (every sheet of a workbook, every file of a ZIP), in
    status `processing`. Poll `GET /api/datasets/{id}` until `ready` (or `failed`, with
    the reason in `error`)."""
    upload_id = uuid.uuid4()
    staging = staging_dir(state.settings.data_dir, upload_id)
    await run_in_threadpool(lambda: staging.mkdir(mode=0o700, parents=True))
    try:
        upload = await receive_upload(request, staging / "upload", state.settings.max_upload_bytes)
        _check_fields(upload.fields)
        name = (upload.fields.get("name") or "").strip() or None
        tables = await run_in_threadpool(
            inspect_upload,
            upload.path,
            upload.filename,
            upload.size,
            upload.sha256,
            _limits(state),
            name,
        )
        datasets = await run_in_threadpool(
            _register, state, request, user, upload, tables, upload_id, staging
        )
    except BaseException:
        await run_in_threadpool(remove_tree, staging)
        raise
    # After the commit: the worker must find the datasets when the message arrives. A send
    # that fails leaves them for the reaper (worker/datasets.py), which sends it again.
    await run_in_threadpool(
        state.queue.send, CONVERT_UPLOAD, str(upload_id), request_id=request_id_of(request)
    )
    public = [with_waiting(state, DatasetPublic.model_validate(d)) for d in datasets]
    return UploadResult(data=public, count=len(public))


def _check_fields(fields: dict[str, str]) -> None:
    """The text fields of an upload obey what the schema says of them, like a JSON body."""
    for field, limit in (("name", NAME_MAX), ("description", UPLOAD_DESCRIPTION_MAX)):
        value = fields.get(field)
        if value is None:
            continue
        problem = text_problem(value)
        if problem is None and len(value) > limit:
            problem = f"must be at most {limit} characters (it has {len(value)})"
        if problem:
            raise Unprocessable(
                f"{field}: {problem}", details=[{"field": field, "message": problem}]
            )


def _register(
    state: AppState,
    request: Request,
    user: Principal,
    upload: ReceivedUpload,
    tables: list[SourceTable],
    upload_id: uuid.UUID,
    staging: Path,
) -> list[Dataset]:
    """The datasets, with everything a worker needs to convert them from the database and
    the staging folder alone (the table as inspected, its file relative to the folder)."""
    description = (upload.fields.get("description") or "").strip() or None
    now = utcnow()
    with state.sessionmaker() as db:
        datasets = [
            Dataset(
                id=new_id(),
                user_id=user.id,
                name=table.name[:200],
                description=description,
                original_filename=upload.filename,
                archive_member=table.archive_member,
                sheet_name=table.sheet_name,
                source_format=table.format,
                status=DatasetStatus.PROCESSING,
                sha256=table.sha256,
                size_bytes=table.size,
                encoding=table.encoding if table.format in {"csv", "tsv"} else None,
                delimiter=table.delimiter,
                upload_id=upload_id,
                source={
                    **table.to_json(),
                    "path": Path(table.path).relative_to(staging).as_posix(),
                },
                enqueued_at=now,
            )
            for table in tables
        ]
        db.add_all(datasets)
        audit(
            db,
            request,
            "dataset.upload",
            user_id=user.id,
            target=("upload", upload.sha256[:16]),
            filename=upload.filename,
            bytes=upload.size,
            datasets=[str(d.id) for d in datasets],
        )
        db.commit()
        return datasets


@router.get("", summary="List your datasets, newest first", responses=_SIGNED_IN)
async def list_datasets(
    db: SessionDep,
    user: CurrentUser,
    state: StateDep,
    params: PageDep,
    status_: Annotated[DatasetStatus | None, Query(alias="status")] = None,
) -> Page[DatasetPublic]:
    stmt = (
        select(Dataset)
        .where(Dataset.user_id == user.id)
        .options(defer(Dataset.profile), defer(Dataset.source))
        .order_by(Dataset.created_at.desc(), Dataset.id.desc())
    )
    if status_ is not None:
        stmt = stmt.where(Dataset.status == status_)
    rows, total = page(db, stmt, params)
    return Page(
        data=[with_waiting(state, DatasetPublic.model_validate(r)) for r in rows],
        count=total,
        limit=params.limit,
        offset=params.offset,
    )


@router.get("/{dataset_id}", summary="A dataset with its profile", responses=_ERRORS)
async def get_dataset(
    dataset_id: uuid.UUID, db: SessionDep, user: CurrentUser, state: StateDep
) -> DatasetDetail:
    found = DatasetDetail.model_validate(get_owned(db, Dataset, dataset_id, user.id, "Dataset"))
    return with_waiting(state, found)


DatasetT = TypeVar("DatasetT", bound=DatasetPublic)


def with_waiting(state: AppState, dataset: DatasetT) -> DatasetT:
    """A dataset waiting for conversion says so when no worker converts uploads."""
    if dataset.status == DatasetStatus.PROCESSING:
        dataset.waiting = state.monitor.waiting("datasets", since=dataset.created_at)
    return dataset


@router.patch("/{dataset_id}", summary="Rename or describe a dataset", responses=_ERRORS)
def update_dataset(
    dataset_id: uuid.UUID, body: DatasetUpdate, request: Request, db: SessionDep, user: CurrentUser
) -> DatasetDetail:
    dataset = get_owned(db, Dataset, dataset_id, user.id, "Dataset")
    changes = body.model_dump(exclude_unset=True)
    if changes.get("name") is not None:
        dataset.name = changes["name"]
        db.execute(
            update(SessionDataset)
            .where(SessionDataset.dataset_id == dataset.id, SessionDataset.user_id == user.id)
            .values(dataset_name=dataset.name)
        )
    if "description" in changes:
        dataset.description = changes["description"]
    if changes.get("share_samples") is not None:
        dataset.share_samples = changes["share_samples"]
    db.commit()
    return DatasetDetail.model_validate(dataset)


def _ready_file(state: AppState, dataset: Dataset) -> Any:
    if dataset.status == DatasetStatus.PROCESSING:
        raise APIError(
            "The dataset is still being processed; try again in a moment.",
            status_code=409,
            code="dataset_not_ready",
        )
    if dataset.status == DatasetStatus.FAILED:
        raise APIError(
            f"The dataset could not be processed: {dataset.error}",
            status_code=409,
            code="dataset_failed",
        )
    path = dataset_file(state.settings.data_dir, dataset.user_id, dataset.id)
    if not path.exists():
        raise APIError(
            "The dataset's file is missing from storage; upload it again.",
            status_code=410,
            code="dataset_file_missing",
        )
    return path


@router.get(
    "/{dataset_id}/preview",
    summary="The first rows of a dataset",
    responses={**_ERRORS, **_NOT_READY},
)
def preview_dataset(
    dataset_id: uuid.UUID,
    db: SessionDep,
    user: CurrentUser,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> DatasetPreview:
    dataset = get_owned(db, Dataset, dataset_id, user.id, "Dataset")
    columns, rows, total = preview(_ready_file(state, dataset), limit)
    return DatasetPreview(columns=columns, rows=rows, limit=limit, total_rows=total)


def _download_name(dataset: Dataset, extension: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset.name).strip("._") or "dataset"
    return f"{base[:100]}.{extension}"


@router.get(
    "/{dataset_id}/download",
    summary="Download a dataset as CSV (spreadsheet-safe) or Parquet",
    responses={
        **_ERRORS,
        **_NOT_READY,
        200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}}},
    },
)
def download_dataset(
    dataset_id: uuid.UUID,
    db: SessionDep,
    user: CurrentUser,
    state: StateDep,
    format: Literal["csv", "parquet"] = "csv",
) -> Response:
    dataset = get_owned(db, Dataset, dataset_id, user.id, "Dataset")
    path = _ready_file(state, dataset)
    filename = _download_name(dataset, format)
    if format == "parquet":
        return FileResponse(path, media_type="application/vnd.apache.parquet", filename=filename)
    return StreamingResponse(
        csv_chunks(path),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a dataset and its file",
    responses=_ERRORS,
)
def delete_dataset(
    dataset_id: uuid.UUID, request: Request, db: SessionDep, user: CurrentUser, state: StateDep
) -> None:
    """Sessions that used the dataset keep a note of it (`status: deleted`)."""
    dataset = get_owned(db, Dataset, dataset_id, user.id, "Dataset")
    upload_id = dataset.upload_id if dataset.status == DatasetStatus.PROCESSING else None
    db.execute(
        update(SessionDataset)
        .where(SessionDataset.dataset_id == dataset.id, SessionDataset.user_id == user.id)
        .values(dataset_deleted_at=utcnow(), dataset_name=dataset.name)
    )
    db.execute(delete(Dataset).where(Dataset.id == dataset.id, Dataset.user_id == user.id))
    audit(db, request, "dataset.delete", user_id=user.id, target=("dataset", dataset.id))
    db.commit()
    remove_tree(dataset_dir(state.settings.data_dir, user.id, dataset.id))
    if upload_id is not None:  # nothing of the upload left to convert: its folder goes too
        staging.release(db, state.settings.data_dir, upload_id)
