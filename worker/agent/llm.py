"""The chat model: any OpenAI-compatible endpoint when a key is set, else the offline model."""

from __future__ import annotations

import importlib

from langchain_core.language_models import BaseChatModel

from api.config import Settings
from worker.agent.offline import NAME as OFFLINE
from worker.agent.offline import OfflineChatModel


def model_name(settings: Settings) -> str:
    if settings.llm_factory:
        return settings.llm_factory.rpartition(":")[2][:100]
    return settings.llm_model if settings.openai_api_key else OFFLINE


def make_model(settings: Settings) -> BaseChatModel:
    if settings.llm_factory:
        module, _, attribute = settings.llm_factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
        return factory()  # type: ignore[no-any-return]
    if not settings.openai_api_key:
        return OfflineChatModel()
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=settings.llm_model,
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        temperature=settings.llm_temperature,
        timeout=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
        stream_usage=True,
    )


def cost_usd(settings: Settings, prompt_tokens: int, completion_tokens: int) -> float:
    if not settings.openai_api_key:
        return 0.0
    return (
        prompt_tokens * settings.llm_price_prompt_per_mtok
        + completion_tokens * settings.llm_price_completion_per_mtok
    ) / 1_000_000


# The OpenAI client's errors a user can act on, by class name (langchain-openai is optional).
_STATUS_ERRORS = frozenset(
    {
        "BadRequestError",
        "NotFoundError",
        "PermissionDeniedError",
        "UnprocessableEntityError",
        "InternalServerError",
        "APIStatusError",
    }
)


def error_text(exc: BaseException) -> str | None:
    """What the user reads when the language model failed the turn (None: not the model's
    failure): what happened and what to do, with the setting to check."""
    name = type(exc).__name__
    if "APIConnectionError" in name or "ConnectError" in name:
        return "The language model could not be reached; check OPENAI_BASE_URL and try again."
    if "AuthenticationError" in name:
        return "The language model refused the API key (OPENAI_API_KEY)."
    if "RateLimitError" in name:
        return "The language model is rate-limiting Quarry; try again in a minute."
    if "Timeout" in name:
        return "The language model did not answer in time; try again."
    if name in _STATUS_ERRORS:
        message = getattr(exc, "message", None) or str(exc)
        return f"The language model answered with an error: {str(message)[:300]}"
    return None
