"""Deleting a session deletes the conversation LangGraph kept for it (embedded mode: the
SQLite checkpoint file; the PostgreSQL tables are covered with a real worker in
tests/test_agent_integration.py)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TypedDict

from langgraph.graph import END, START, StateGraph

from api.checkpoints import forget_thread
from api.config import Settings
from worker.agent.checkpoint import has_checkpoint, open_checkpointer


class Count(TypedDict):
    n: int


def test_forgetting_a_thread_removes_its_checkpoints_and_keeps_the_others(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="")
    assert settings.is_embedded_database
    saver, conn = open_checkpointer(settings)
    graph = StateGraph(Count)
    graph.add_node("step", lambda state: {"n": state["n"] + 1})
    graph.add_edge(START, "step")
    graph.add_edge("step", END)
    app = graph.compile(checkpointer=saver)
    gone, kept = uuid.uuid4(), uuid.uuid4()
    for thread in (gone, kept):
        app.invoke({"n": 0}, {"configurable": {"thread_id": str(thread)}})
        assert has_checkpoint(conn, str(thread))

    forget_thread(None, settings, gone)  # type: ignore[arg-type]  # no SQL session needed

    assert not has_checkpoint(conn, str(gone))
    assert has_checkpoint(conn, str(kept))
    for table in ("checkpoints", "writes"):
        sql = f"SELECT count(*) FROM {table} WHERE thread_id = ?"  # noqa: S608
        assert conn.execute(sql, (str(gone),)).fetchone() == (0,)
    conn.close()


def test_nothing_to_forget_before_the_first_turn(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="")
    forget_thread(None, settings, uuid.uuid4())  # type: ignore[arg-type]
    assert not (tmp_path / "checkpoints.sqlite").exists()
