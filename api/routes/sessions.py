"""Analysis sessions: the conversations, the datasets they use, their messages and charts."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import select
from sqlalchemy.orm import Session, defer, selectinload

from api import notebook, reads
from api.audit import audit
from api.checkpoints import forget_thread
from api.crud import get_owned, get_owned_many, owned_id, page
from api.db import utcnow
from api.deps import AppState, CurrentUser, PageDep, PageParams, SessionDep, StateDep
from api.errors import Conflict, Unprocessable, request_id_of
from api.models import (
    AnalysisSession,
    CodeExecution,
    Dataset,
    DatasetStatus,
    Message,
    MessageRole,
    Run,
    RunKind,
    SessionDataset,
    SessionStatus,
    Visualization,
)
from api.naming import file_name, variable_name
from api.profiles import suggestions, tables
from api.schemas import (
    CodeExecutionPublic,
    ExecutionAccepted,
    ExecutionCreate,
    MessageCreate,
    MessagePublic,
    Page,
    RunPublic,
    SessionCreate,
    SessionPublic,
    SessionUpdate,
    Suggestions,
    TurnAccepted,
    VisualizationPublic,
)
from api.storage import remove_tree, workspace_dir
from api.turns import check_limits, enqueue_run

router = APIRouter(prefix="/api/sessions", tags=["sessions"])

P = TypeVar("P", MessagePublic, CodeExecutionPublic)

_SIGNED_IN: dict[int | str, dict[str, Any]] = {401: {"description": "Not signed in"}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    **_SIGNED_IN,
    404: {"description": "No such session (or not yours)"},
}
_DATASETS: dict[int | str, dict[str, Any]] = {
    404: {"description": "A dataset id that is not yours"},
    422: {"description": "A dataset that failed to process, or invalid input"},
}


def _owned_datasets(db: Session, user_id: uuid.UUID, ids: list[uuid.UUID]) -> list[Dataset]:
    datasets = get_owned_many(
        db, Dataset, ids, user_id, "Dataset", options=[defer(Dataset.profile)]
    )
    failed = [d.name for d in datasets if d.status == DatasetStatus.FAILED]
    if failed:
        names = ", ".join(repr(name) for name in failed)
        raise Unprocessable(f"These datasets failed to process and cannot be used: {names}")
    return datasets


def _attach(session: AnalysisSession, datasets: list[Dataset]) -> None:
    current = {link.dataset_id: link for link in session.dataset_links if link.dataset_id}
    wanted = {d.id for d in datasets}
    for dataset_id, link in current.items():
        if dataset_id not in wanted:
            session.dataset_links.remove(link)
    for dataset in datasets:
        if dataset.id not in current:
            session.dataset_links.append(
                SessionDataset(
                    user_id=session.user_id,
                    dataset_id=dataset.id,
                    dataset_name=dataset.name,
                    dataset=dataset,
                )
            )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Start an analysis session",
    responses={**_SIGNED_IN, **_DATASETS},
)
def create_session(body: SessionCreate, db: SessionDep, user: CurrentUser) -> SessionPublic:
    datasets = _owned_datasets(db, user.id, body.dataset_ids)
    title = body.title or (f"Analysis of {datasets[0].name}" if datasets else "New analysis")
    session = AnalysisSession(user_id=user.id, title=title[:200], dataset_links=[])
    _attach(session, datasets)
    db.add(session)
    db.commit()
    return reads.session_public(db, session.id, user.id)


@router.get("", summary="List your sessions, most recently active first", responses=_SIGNED_IN)
async def list_sessions(db: SessionDep, user: CurrentUser, params: PageDep) -> Page[SessionPublic]:
    # Reads on the event loop: see api/deps.py.
    return reads.session_page(db, user.id, params.limit, params.offset)


@router.get("/{session_id}", summary="A session with its datasets", responses=_ERRORS)
async def get_session(session_id: uuid.UUID, db: SessionDep, user: CurrentUser) -> SessionPublic:
    # Reads on the event loop: see api/deps.py.
    return reads.session_public(db, session_id, user.id)


@router.patch(
    "/{session_id}",
    summary="Rename, archive, or change the datasets of a session",
    responses={**_ERRORS, **_DATASETS, 404: {"description": "No such session or dataset"}},
)
def update_session(
    session_id: uuid.UUID, body: SessionUpdate, db: SessionDep, user: CurrentUser
) -> SessionPublic:
    session = get_owned(
        db,
        AnalysisSession,
        session_id,
        user.id,
        "Session",
        options=[selectinload(AnalysisSession.dataset_links)],
    )
    if body.title is not None:
        session.title = body.title
    if body.status is not None:
        session.status = body.status
    if body.dataset_ids is not None:
        _attach(session, _owned_datasets(db, user.id, body.dataset_ids))
    session.updated_at = utcnow()
    db.commit()
    return reads.session_public(db, session.id, user.id)


@router.delete(
    "/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a session with its messages, runs and charts",
    responses=_ERRORS,
)
def delete_session(
    session_id: uuid.UUID, request: Request, db: SessionDep, state: StateDep, user: CurrentUser
) -> None:
    session = get_owned(db, AnalysisSession, session_id, user.id, "Session")
    db.delete(session)
    audit(db, request, "session.delete", user_id=user.id, target=("session", session_id))
    if not state.settings.is_embedded_database:
        forget_thread(db, state.settings, session_id)  # the conversation the agent kept
    db.commit()
    if state.settings.is_embedded_database:
        forget_thread(db, state.settings, session_id)
    # the variables its snippets kept (after the commit: a failed delete keeps them)
    remove_tree(workspace_dir(state.settings.data_dir, user.id, session_id))


def _oldest_first(
    db: Session,
    model: type[Message] | type[CodeExecution],
    schema: type[P],
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    params: PageParams,
) -> Page[P]:
    """One page of a session's messages or code executions, in the order they happened."""
    owned_id(db, AnalysisSession, session_id, user_id, "Session")
    stmt = (
        select(model)
        .where(model.session_id == session_id, model.user_id == user_id)
        .order_by(model.created_at, model.id)
    )
    rows, total = page(db, stmt, params)
    data = [schema.model_validate(row) for row in rows]
    return Page(data=data, count=total, limit=params.limit, offset=params.offset)


@router.get("/{session_id}/messages", summary="The conversation, oldest first", responses=_ERRORS)
async def list_messages(
    session_id: uuid.UUID, db: SessionDep, user: CurrentUser, params: PageDep
) -> Page[MessagePublic]:
    return _oldest_first(db, Message, MessagePublic, session_id, user.id, params)


def _open_for_a_run(
    db: Session, state: AppState, user_id: uuid.UUID, session_id: uuid.UUID, *, uses_tokens: bool
) -> AnalysisSession:
    """The session a new run goes into: yours, not archived, within the limits."""
    session = get_owned(db, AnalysisSession, session_id, user_id, "Session")
    if session.status == SessionStatus.ARCHIVED:
        raise Conflict("The session is archived; reopen it (status 'active') to continue.")
    check_limits(db, state, user_id, session.id, uses_tokens=uses_tokens)
    return session


@router.post(
    "/{session_id}/messages",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Ask a question: stores it and queues an agent turn",
    responses={
        **_ERRORS,
        409: {"description": "The session is archived"},
        429: {"description": "A turn is already running here, or a per-user limit is reached"},
    },
)
def post_message(
    session_id: uuid.UUID,
    body: MessageCreate,
    request: Request,
    db: SessionDep,
    state: StateDep,
    user: CurrentUser,
) -> TurnAccepted:
    session = _open_for_a_run(db, state, user.id, session_id, uses_tokens=True)
    run = Run(user_id=user.id, session_id=session.id)
    db.add(run)
    db.flush()
    message = Message(
        user_id=user.id,
        session_id=session.id,
        run_id=run.id,
        role=MessageRole.USER,
        content=body.content,
    )
    db.add(message)
    session.updated_at = utcnow()
    db.commit()
    accepted = TurnAccepted(
        run_id=run.id,
        message=MessagePublic.model_validate(message),
        run=RunPublic.model_validate(run),
    )
    enqueue_run(state, run, request_id_of(request))
    return accepted


@router.post(
    "/{session_id}/executions",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Run your own code in the sandbox (no LLM); follow it like a turn",
    responses={
        **_ERRORS,
        409: {"description": "The session is archived"},
        429: {"description": "Something is already running here, or a per-user limit is reached"},
    },
)
def post_execution(
    session_id: uuid.UUID,
    body: ExecutionCreate,
    request: Request,
    db: SessionDep,
    state: StateDep,
    user: CurrentUser,
) -> ExecutionAccepted:
    """The code runs like the agent's: a fresh sandbox with the session's datasets and kept
    variables; its output, tables and charts are stored and streamed as the run's events."""
    session = _open_for_a_run(db, state, user.id, session_id, uses_tokens=False)
    run = Run(user_id=user.id, session_id=session.id, kind=RunKind.EXECUTION, code=body.code)
    db.add(run)
    session.updated_at = utcnow()
    db.commit()
    accepted = ExecutionAccepted(run_id=run.id, run=RunPublic.model_validate(run))
    enqueue_run(state, run, request_id_of(request))
    return accepted


@router.get(
    "/{session_id}/suggestions",
    summary="Questions to start with, built from the session's datasets",
    responses=_ERRORS,
)
def list_suggestions(session_id: uuid.UUID, db: SessionDep, user: CurrentUser) -> Suggestions:
    """What an empty chat offers: 4 to 6 questions over the session's first dataset (its
    columns and frequent values), each one the offline model answers."""
    session = get_owned(db, AnalysisSession, session_id, user.id, "Session")
    links = db.scalars(
        select(SessionDataset)
        .where(SessionDataset.session_id == session.id, SessionDataset.user_id == user.id)
        .order_by(SessionDataset.added_at)
    ).all()
    schemas, profiles, taken = [], {}, {"df"}
    for link in links:
        dataset = link.dataset
        if dataset is None or dataset.status != DatasetStatus.READY or dataset.user_id != user.id:
            continue
        variable = variable_name(dataset.name, taken)  # as the worker names it
        taken.add(variable)
        profile = dataset.profile or {}
        columns = {str(c["name"]): c.get("dtype", "?") for c in profile.get("columns", [])}
        schemas.append(
            {
                "variable": variable,
                "name": dataset.name,
                "rows": dataset.row_count,
                "columns": columns,
            }
        )
        profiles[variable] = profile
    return Suggestions(data=suggestions(tables(schemas, profiles)))


@router.get(
    "/{session_id}/executions",
    summary="Code run in this session (by the agent or by you), oldest first",
    responses=_ERRORS,
)
async def list_executions(
    session_id: uuid.UUID, db: SessionDep, user: CurrentUser, params: PageDep
) -> Page[CodeExecutionPublic]:
    return _oldest_first(db, CodeExecution, CodeExecutionPublic, session_id, user.id, params)


@router.get(
    "/{session_id}/export.ipynb",
    summary="The session as a Jupyter notebook",
    responses={**_ERRORS, 200: {"content": {"application/x-ipynb+json": {}}}},
)
def export_notebook(session_id: uuid.UUID, db: SessionDep, user: CurrentUser) -> Response:
    """Questions and answers as markdown, code as cells with their stored outputs, and a
    first cell that loads the datasets from their Parquet downloads, so that the notebook
    runs top to bottom outside Quarry."""
    session = get_owned(
        db,
        AnalysisSession,
        session_id,
        user.id,
        "Session",
        options=[selectinload(AnalysisSession.dataset_links)],
    )
    body = notebook.export(db, session)
    filename = file_name(session.title, "ipynb", fallback="session")
    return Response(
        body,
        media_type="application/x-ipynb+json",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/{session_id}/visualizations",
    summary="The session's charts (Plotly JSON), newest first",
    responses=_ERRORS,
)
async def list_visualizations(
    session_id: uuid.UUID,
    db: SessionDep,
    user: CurrentUser,
    params: PageDep,
    include_figure: bool = True,
) -> Page[VisualizationPublic]:
    owned_id(db, AnalysisSession, session_id, user.id, "Session")
    return charts_page(db, user.id, params, include_figure, session_id=session_id)


def charts_page(
    db: Session,
    user_id: uuid.UUID,
    params: PageParams,
    include_figure: bool,
    *,
    session_id: uuid.UUID | None = None,
) -> Page[VisualizationPublic]:
    """A user's charts, newest first: one session's, or all of them."""
    stmt = select(Visualization).where(Visualization.user_id == user_id)
    if session_id is not None:
        stmt = stmt.where(Visualization.session_id == session_id)
    stmt = stmt.order_by(Visualization.created_at.desc(), Visualization.id.desc())
    if not include_figure:
        stmt = stmt.options(defer(Visualization.figure, raiseload=True))
    rows, total = page(db, stmt, params)
    data = [visualization_public(v, include_figure=include_figure) for v in rows]
    return Page(data=data, count=total, limit=params.limit, offset=params.offset)


def visualization_public(v: Visualization, *, include_figure: bool = True) -> VisualizationPublic:
    return VisualizationPublic(
        id=v.id,
        session_id=v.session_id,
        run_id=v.run_id,
        code_execution_id=v.code_execution_id,
        title=v.title,
        figure=v.figure if include_figure else None,
        created_at=v.created_at,
        updated_at=v.updated_at,
    )
