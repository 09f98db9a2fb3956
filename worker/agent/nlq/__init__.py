"""The offline model's understanding of a question: words placed against the session's
tables (`parse.py`), a typed plan said in plain words (`query.py`), and the pandas/plotly
snippet it becomes (`codegen.py`). See docs/OFFLINE_MODEL.md."""
