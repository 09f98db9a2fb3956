"""What agent turns produce, addressed by their own ids: runs and visualizations."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter

from api.crud import get_owned
from api.deps import CurrentUser, SessionDep
from api.models import Run, Visualization
from api.routes.sessions import visualization_public
from api.schemas import RunPublic, VisualizationPublic

router = APIRouter(prefix="/api")

_ERRORS: dict[int | str, dict[str, Any]] = {401: {"description": "Not signed in"}}


@router.get(
    "/runs/{run_id}",
    tags=["runs"],
    summary="An agent turn: status, timings, token usage and cost",
    responses={**_ERRORS, 404: {"description": "No such run (or not yours)"}},
)
async def get_run(run_id: uuid.UUID, db: SessionDep, user: CurrentUser) -> RunPublic:
    return RunPublic.model_validate(get_owned(db, Run, run_id, user.id, "Run"))


@router.get(
    "/visualizations/{visualization_id}",
    tags=["visualizations"],
    summary="One chart as Plotly figure JSON",
    responses={**_ERRORS, 404: {"description": "No such visualization (or not yours)"}},
)
async def get_visualization(
    visualization_id: uuid.UUID, db: SessionDep, user: CurrentUser
) -> VisualizationPublic:
    viz = get_owned(db, Visualization, visualization_id, user.id, "Visualization")
    return visualization_public(viz)
