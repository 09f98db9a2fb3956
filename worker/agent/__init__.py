"""The agent: a LangGraph graph (worker/agent/graph.py) whose tools run snippets in the
sandbox; the model is any OpenAI-compatible endpoint or Quarry's offline model."""
