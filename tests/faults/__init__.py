"""Fault injection on real services: Redis restarted and flushed, PostgreSQL restarted under
load, the API killed mid-upload, hundreds of SSE followers, snippets that exhaust memory or
CPU, malformed broker messages. The only fake is the LLM (tests/agent_models.py)."""
