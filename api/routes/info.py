"""What this Quarry runs on: which chat model, what the offline model can answer, and which
files an upload may be."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import CurrentUser, StateDep
from api.ingest.sniff import ARCHIVE_EXTENSIONS, DATA_EXTENSIONS

router = APIRouter(prefix="/api", tags=["auth"])

# What Quarry's offline model understands (worker/agent/offline.py; a test asks it each one).
OFFLINE_EXAMPLES = [
    "Give me an overview of the data",
    "What columns are there and what types?",
    "Which columns have missing values?",
    "Show the distribution of age",
    "How many rows per education?",
    "age vs income",
    "Show the correlation matrix",
    "Average income by education",
    "Top 5 education by average income",
    "Which education has the highest average income?",
    "Average income per month of signup_date",
    "How many rows where income is more than 50000?",
    "Predict income from the other columns",
    "My name is Alice (and later: what is my name?)",
]


class ModelInfo(BaseModel):
    mode: Literal["offline", "openai-compatible", "custom"]
    model: str
    endpoint: str | None  # the host of OPENAI_BASE_URL (never a key)
    max_tool_calls: int
    daily_token_budget: int  # 0: none
    offline_examples: list[str]


@router.get("/model", summary="Which chat model the agent uses, and what it can answer")
async def model_info(state: StateDep, _user: CurrentUser) -> ModelInfo:
    settings = state.settings
    if settings.llm_factory:
        mode: Literal["offline", "openai-compatible", "custom"] = "custom"
        model = settings.llm_factory.rpartition(":")[2]
    elif settings.openai_api_key:
        mode, model = "openai-compatible", settings.llm_model
    else:
        mode, model = "offline", "offline"
    endpoint = None
    if mode == "openai-compatible":
        endpoint = urlsplit(settings.openai_base_url).hostname if settings.openai_base_url else None
        endpoint = endpoint or "api.openai.com"
    return ModelInfo(
        mode=mode,
        model=model,
        endpoint=endpoint,
        max_tool_calls=settings.agent_max_tool_calls,
        daily_token_budget=settings.daily_token_budget_per_user,
        offline_examples=OFFLINE_EXAMPLES if mode == "offline" else [],
    )


class UploadFormats(BaseModel):
    extensions: list[str]  # without the dot: "csv", "xlsx", "zip"...


@router.get(
    "/upload-formats",
    tags=["datasets"],
    summary="The file extensions an upload may have (the UI's file picker offers these)",
)
async def upload_formats(_user: CurrentUser) -> UploadFormats:
    names = sorted(e.lstrip(".") for e in DATA_EXTENSIONS | ARCHIVE_EXTENSIONS)
    return UploadFormats(extensions=names)
