"""Quarry's `offline` model: a deterministic chat model for people without an LLM key (and
the backbone of the end-to-end tests). No network: it reads the user's question, matches
column names loosely against the session's schema (from the system prompt), and writes real
pandas/plotly code that goes through the same tools and sandbox as an LLM's.

It understands: an overview, columns and types, missing values, the size, the distribution
of a column, counts by category, X against Y, a correlation matrix, an aggregation by group
("average price by region"), top N, a trend over a date column, a quick regression or
classification with a held-out score, and facts the user states ("my name is Alice"). For
anything else it says so plainly.
"""

from __future__ import annotations

import difflib
import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

NAME = "offline"
KEY = "quarry_offline"
NEEDS_KEY = (
    "I'm Quarry's offline assistant, so I only understand common analysis requests "
    "(overview, columns, missing values, distribution of a column, counts by category, "
    "X vs Y, correlations, averages by group, top N, trends over time, a quick model). "
    "Set OPENAI_API_KEY (or OPENAI_BASE_URL for a local model) for free-form questions."
)

_AGGS = [
    (r"\b(average|mean|avg)\b", "mean", "average"),
    (r"\bmedian\b", "median", "median"),
    (r"\b(sum|total)\b", "sum", "total"),
    (r"\b(max|maximum|highest|largest)\b", "max", "maximum"),
    (r"\b(min|minimum|lowest|smallest)\b", "min", "minimum"),
    (r"\b(std|standard deviation)\b", "std", "standard deviation"),
]
_NAME_STATED = re.compile(
    r"\b(?:my name is|call me|i am called|i'm called)\s+([A-Za-z][\w'-]*)", re.I
)
_NAME_ASKED = re.compile(r"\b(what(?:'s| is) my name|who am i|(?:know|remember) my name)\b", re.I)
_RECALL = re.compile(
    r"\b(what was|what were|what did|remind me|earlier|previous(?:ly)?|again|before)\b", re.I
)


def _is_numeric(dtype: str) -> bool:
    return any(t in dtype.lower() for t in ("int", "float", "double", "decimal"))


def _is_temporal(dtype: str) -> bool:
    return any(t in dtype.lower() for t in ("date", "time"))


def _variants(column: str) -> set[str]:
    base = column.lower().replace("_", " ").strip()
    out = {base, column.lower()}
    out |= {v[:-1] for v in list(out) if v.endswith("s") and len(v) > 3}
    out |= {v + "s" for v in list(out)}
    return out


class Schema:
    def __init__(self, datasets: list[dict[str, Any]]) -> None:
        self.datasets = datasets

    @classmethod
    def from_messages(cls, messages: Sequence[BaseMessage]) -> Schema:
        for m in messages:
            if isinstance(m, SystemMessage) and isinstance(m.content, str):
                for line in m.content.splitlines():
                    if line.startswith("[") and '"variable"' in line:
                        try:
                            return cls(json.loads(line))
                        except ValueError:
                            pass
        return cls([])

    def pick(self, text: str) -> dict[str, Any] | None:
        for d in self.datasets:
            if d["variable"] in text or str(d.get("name", "")).lower() in text:
                return d
        return self.datasets[0] if self.datasets else None


def find_columns(text: str, columns: dict[str, str]) -> list[str]:
    """Columns the text mentions, in the order they appear (exact words first, then
    close spellings)."""
    low = text.lower()
    hits: list[tuple[int, str]] = []
    for column in columns:
        best = None
        for variant in _variants(column):
            m = re.search(rf"(?<![\w]){re.escape(variant)}(?![\w])", low)
            if m and (best is None or m.start() < best):
                best = m.start()
        if best is not None:
            hits.append((best, column))
    found = [c for _, c in sorted(hits)]
    if found:
        # drop a column whose match is inside a longer matched one ("price" in "unit price")
        return [c for c in found if not any(c != o and c.lower() in o.lower() for o in found)]
    names = {v: c for c in columns for v in _variants(c)}
    for word in re.findall(r"[a-z][a-z0-9_]{2,}", low):
        close = difflib.get_close_matches(word, list(names), n=1, cutoff=0.82)
        if close and names[close[0]] not in found:
            found.append(names[close[0]])
    return found


def _q(name: str) -> str:
    return json.dumps(name)


class Plan:
    """A snippet to run and how to phrase its result."""

    def __init__(self, intro: str, code: str, answer: str) -> None:
        self.intro, self.code, self.answer = intro, code, answer


def plan_for(question: str, schema: Schema) -> Plan | None:
    data = schema.pick(question.lower())
    if data is None:
        return None
    var = data["variable"]
    columns: dict[str, str] = data.get("columns", {})
    numeric = [c for c, t in columns.items() if _is_numeric(t)]
    temporal = [c for c, t in columns.items() if _is_temporal(t)]
    q = question.lower()
    mentioned = find_columns(question, columns)
    num_m = [c for c in mentioned if c in numeric]
    cat_m = [c for c in mentioned if c not in numeric and c not in temporal]
    grouped = re.search(r"\b(by|per|for each|across|grouped by|split by)\b", q) is not None

    if re.search(r"\b(how many rows|number of rows|row count|how big|size of|shape)\b", q):
        return Plan(
            f"Counting the rows of {var}.",
            f"{var}.shape",
            f"{var} has {{result}} (rows, columns).",
        )
    if (
        re.search(r"\b(columns|column types|dtypes|types|schema|fields|variables)\b", q)
        and not mentioned
    ):
        return Plan(
            f"Listing the columns of {var} and their types.",
            f'{var}.dtypes.astype(str).rename("dtype").to_frame()',
            f"{var} has these columns:",
        )
    if re.search(r"\b(missing|null|nulls|nan|empty values|blank)\b", q):
        return Plan(
            "Counting missing values per column.",
            f"missing = {var}.isna().sum()\n"
            f'out = missing.to_frame("missing")\n'
            f'out["percent"] = (missing / max(len({var}), 1) * 100).round(2)\n'
            "out.sort_values('missing', ascending=False)",
            "Missing values per column:",
        )
    if "correlat" in q:
        pair = num_m[:2]
        if len(pair) == 2:
            a, b = pair
            return Plan(
                f"Computing the correlation between {a} and {b}.",
                f"round({var}[{_q(a)}].corr({var}[{_q(b)}]), 4)",
                f"The correlation between {a} and {b} is {{result}}.",
            )
        return Plan(
            "Computing the correlation matrix of the numeric columns.",
            "import plotly.express as px\n"
            f'corr = {var}.select_dtypes("number").corr().round(3)\n'
            'fig = px.imshow(corr, text_auto=True, title="Correlation matrix", '
            'color_continuous_scale="RdBu_r", zmin=-1, zmax=1)\n'
            "corr",
            "The correlation matrix of the numeric columns (also as a heatmap):",
        )
    if re.search(r"\b(predict|prediction|regression|classif\w*|model|forecast)\b", q):
        if not mentioned:
            return None
        target = mentioned[0]
        features = [c for c in numeric if c != target][:20]
        if not features:
            return None
        if target in numeric:
            estimator, score, what = "LinearRegression()", "r2_score", "R²"
            imports = "from sklearn.linear_model import LinearRegression\nfrom sklearn.metrics import r2_score"
        else:
            estimator, score, what = (
                "LogisticRegression(max_iter=1000)",
                "accuracy_score",
                "accuracy",
            )
            imports = "from sklearn.linear_model import LogisticRegression\nfrom sklearn.metrics import accuracy_score"
        code = (
            f"{imports}\nfrom sklearn.model_selection import train_test_split\n"
            f"data = {var}[{json.dumps([*features, target])}].dropna()\n"
            f"X, y = data[{json.dumps(features)}], data[{_q(target)}]\n"
            "X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)\n"
            f"model = {estimator}.fit(X_train, y_train)\n"
            f"round({score}(y_test, model.predict(X_test)), 4)"
        )
        return Plan(
            f"Fitting a quick model for {target} from {', '.join(features)} (25% held out).",
            code,
            f"A {estimator.split('(')[0]} predicting {target} from {', '.join(features)} "
            f"scores {what} = {{result}} on the held-out 25%.",
        )
    if re.search(
        r"\b(trend|over time|by month|per month|monthly|by year|per year|yearly|time series|by date|daily)\b",
        q,
    ):
        date = next((c for c in mentioned if c in temporal), temporal[0] if temporal else None)
        if date is not None:
            freq = (
                "YS" if re.search(r"\b(year|yearly|annual)\b", q) else "D" if "daily" in q else "MS"
            )
            value = num_m[0] if num_m else None
            agg = next((fn for pat, fn, _ in _AGGS if re.search(pat, q)), "sum")
            series = (
                f"{var}.set_index({_q(date)})[{_q(value)}].resample({_q(freq)}).{agg}()"
                if value
                else f"{var}.set_index({_q(date)}).resample({_q(freq)}).size().rename('count')"
            )
            label = f"{agg} of {value}" if value else "number of rows"
            return Plan(
                f"Plotting the {label} over {date}.",
                "import plotly.express as px\n"
                f"trend = {series}.reset_index()\n"
                f"fig = px.line(trend, x={_q(date)}, y=trend.columns[1], markers=True, "
                f"title={_q(f'{label} over time'.capitalize())})\n"
                "trend",
                f"The {label} over time (chart above):",
            )
    top = re.search(r"\b(?:top|largest|biggest|highest|best)\s+(\d+)\b|\btop\b", q)
    if top:
        n = int(top.group(1)) if top.group(1) else 5
        if num_m and cat_m and grouped:
            value, group = num_m[0], cat_m[0]
            return Plan(
                f"Ranking {group} by total {value}.",
                f"{var}.groupby({_q(group)})[{_q(value)}].sum().nlargest({n}).reset_index()",
                f"The top {n} {group} by total {value}:",
            )
        if num_m:
            return Plan(
                f"Finding the {n} rows with the highest {num_m[0]}.",
                f"{var}.nlargest({n}, {_q(num_m[0])})",
                f"The {n} rows with the highest {num_m[0]}:",
            )
        if cat_m:
            return Plan(
                f"Finding the {n} most frequent values of {cat_m[0]}.",
                f"{var}[{_q(cat_m[0])}].value_counts().head({n}).reset_index()",
                f"The {n} most frequent values of {cat_m[0]}:",
            )
    wanted = next(((fn, re.search(pat, q)) for pat, fn, _ in _AGGS if re.search(pat, q)), None)
    if wanted and wanted[1] is not None and num_m:
        fn, word = wanted[0], wanted[1].group(0)  # the user's own word: "mean", "average"...
        value = num_m[0]
        by = cat_m[0] if cat_m else (mentioned[1] if len(mentioned) > 1 and grouped else None)
        if by is not None and grouped:
            group = by
            title = f"{word.capitalize()} {value} by {group}"
            return Plan(
                f"Computing the {word} of {value} for each {group}.",
                "import plotly.express as px\n"
                f"out = {var}.groupby({_q(group)}, dropna=False)[{_q(value)}].{fn}()"
                ".round(2).sort_values(ascending=False).reset_index()\n"
                f"fig = px.bar(out, x={_q(group)}, y={_q(value)}, title={_q(title)})\n"
                "out",
                f"The {word} of {value} by {group}:",
            )
        return Plan(
            f"Computing the {word} of {value}.",
            f"round(float({var}[{_q(value)}].{fn}()), 2)",
            f"The {word} of {value} is {{result}}.",
        )
    if re.search(r"\b(distribution|histogram|spread|distributed)\b", q) and mentioned:
        column = mentioned[0]
        if column in numeric:
            return Plan(
                f"Plotting the distribution of {column}.",
                "import plotly.express as px\n"
                f"fig = px.histogram({var}, x={_q(column)}, title={_q(f'Distribution of {column}')})\n"
                f"{var}[{_q(column)}].describe().round(2).to_frame()",
                f"The distribution of {column} (histogram above); its summary:",
            )
        return Plan(
            f"Counting the values of {column}.",
            "import plotly.express as px\n"
            f"counts = {var}[{_q(column)}].value_counts(dropna=False).head(30).reset_index()\n"
            f"fig = px.bar(counts, x={_q(column)}, y='count', title={_q(f'Distribution of {column}')})\n"
            "counts",
            f"How {column} is distributed:",
        )
    versus = re.search(r"\b(vs\.?|versus|against|relationship|relation|compare|scatter)\b", q)
    if versus and len(mentioned) >= 2:
        a, b = mentioned[0], mentioned[1]
        if a in numeric and b in numeric:
            return Plan(
                f"Plotting {a} against {b}.",
                "import plotly.express as px\n"
                f"fig = px.scatter({var}, x={_q(b)}, y={_q(a)}, title={_q(f'{a} vs {b}')})\n"
                f"round({var}[{_q(a)}].corr({var}[{_q(b)}]), 4)",
                f"{a} against {b} (scatter above); their correlation is {{result}}.",
            )
        value, group = (a, b) if a in numeric else (b, a)
        return Plan(
            f"Comparing {value} across {group}.",
            "import plotly.express as px\n"
            f"fig = px.box({var}, x={_q(group)}, y={_q(value)}, title={_q(f'{value} by {group}')})\n"
            f"{var}.groupby({_q(group)})[{_q(value)}].describe().round(2)",
            f"{value} across {group} (box plot above):",
        )
    if re.search(r"\b(count|counts|how many|frequency|frequencies|breakdown|number of)\b", q) and (
        cat_m or mentioned
    ):
        column = (cat_m or mentioned)[0]
        return Plan(
            f"Counting rows per {column}.",
            "import plotly.express as px\n"
            f"counts = {var}[{_q(column)}].value_counts(dropna=False).reset_index()\n"
            f"fig = px.bar(counts.head(30), x={_q(column)}, y='count', title={_q(f'Rows per {column}')})\n"
            "counts",
            f"Rows per {column}:",
        )
    if re.search(
        r"\b(describe|overview|summary|summari[sz]e|statistics|stats|explore|tell me about|look like)\b",
        q,
    ):
        return Plan(
            f"Summarising {var}.",
            f'print(f"{var}: {{len({var})}} rows x {{len({var}.columns)}} columns")\n'
            f'{var}.describe(include="all").T',
            f"An overview of {var}:",
        )
    return None


_NOT_ROWS = ("table ", "chart created", "note: ", "kept for", "printed:", "result: ", "... (")


def markdown_tables(tool_text: str) -> str:
    """The tables of a tool summary as Markdown."""
    out: list[str] = []
    lines = tool_text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("table ") and i + 1 < len(lines):
            header = lines[i + 1].split(" | ")
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "---|" * len(header))
            i += 2
            while i < len(lines) and lines[i] and not lines[i].startswith(_NOT_ROWS):
                out.append("| " + " | ".join(lines[i].split(" | ")) + " |")
                i += 1
            continue
        if lines[i].startswith("... ("):
            out.append(lines[i])
        i += 1
    return "\n".join(out)


def _result(tool_text: str) -> str | None:
    for line in tool_text.splitlines():
        if line.startswith("result: "):
            return line[len("result: ") :]
    return None


class OfflineChatModel(BaseChatModel):
    """Deterministic, network-free; tools are "bound" by name (it knows Quarry's three)."""

    @property
    def _llm_type(self) -> str:
        return "quarry-offline"

    def bind_tools(self, tools: Any, **kwargs: Any) -> OfflineChatModel:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.respond(messages))])

    def respond(self, messages: Sequence[BaseMessage]) -> AIMessage:
        last = messages[-1] if messages else None
        if isinstance(last, ToolMessage):
            return self._after_tool(messages, last)
        humans = [m for m in messages if isinstance(m, HumanMessage)]
        if not humans:
            return AIMessage(content="How can I help with your data?")
        if isinstance(last, SystemMessage):  # a limit was reached: answer with what there is
            return AIMessage(
                content="I could not finish this analysis within the limits of one question."
            )
        question = str(humans[-1].content)
        history = list(messages[:-1])

        stated = _NAME_STATED.search(question)
        if stated:
            name = stated.group(1)
            name = name[0].upper() + name[1:]
            return AIMessage(content=f"Nice to meet you, {name}! I'll remember your name.")
        if _NAME_ASKED.search(question):
            for m in reversed(humans[:-1]):
                found = _NAME_STATED.search(str(m.content))
                if found:
                    name = found.group(1)
                    return AIMessage(content=f"Your name is {name[0].upper() + name[1:]}.")
            return AIMessage(content="You haven't told me your name yet.")

        schema = Schema.from_messages(messages)
        if _RECALL.search(question):
            earlier = self._recall(question, history)
            if earlier:
                return AIMessage(content=f"Earlier in this conversation: {earlier}")
        if not schema.datasets:
            return AIMessage(
                content="This session has no dataset yet: attach one, then ask me about it."
            )
        plan = plan_for(question, schema)
        if plan is None:
            return AIMessage(content=NEEDS_KEY)
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        return AIMessage(
            content=plan.intro,
            tool_calls=[
                {
                    "name": "run_python",
                    "args": {"code": plan.code},
                    "id": call_id,
                    "type": "tool_call",
                }
            ],
            additional_kwargs={KEY: {"answer": plan.answer}},
        )

    def _recall(self, question: str, history: Sequence[BaseMessage]) -> str | None:
        words = set(re.findall(r"[a-z0-9_]{3,}", question.lower())) - {
            "what",
            "was",
            "were",
            "the",
            "did",
            "earlier",
            "again",
            "before",
            "remind",
            "previous",
            "you",
            "tell",
        }
        for m in reversed(history):
            if (
                isinstance(m, AIMessage)
                and not m.tool_calls
                and isinstance(m.content, str)
                and m.content
            ):
                text = m.content.lower()
                if words and all(any(v in text for v in _variants(w)) for w in words):
                    return m.content
        return None

    def _after_tool(self, messages: Sequence[BaseMessage], tool: ToolMessage) -> AIMessage:
        call = next(
            (m for m in reversed(messages) if isinstance(m, AIMessage) and m.tool_calls),
            None,
        )
        template = (
            ((call.additional_kwargs or {}).get(KEY) or {}).get("answer", "Here is the result:")
            if call
            else "Here is the result:"
        )
        text = str(tool.content)
        if text.startswith("The snippet was not run") or text.startswith("Error"):
            first = text.splitlines()[0]
            return AIMessage(content=f"I could not compute that: {first}")
        value = _result(text)
        if "{result}" in template:
            return AIMessage(
                content=template.replace("{result}", value if value is not None else "(no value)")
            )
        tables = markdown_tables(text)
        printed = ""
        if "printed:" in text:
            printed = text.split("printed:\n", 1)[1].split("\n")[0]
        body = "\n\n".join(p for p in (template, printed, tables) if p)
        if value is not None and not tables:
            body += f"\n\n{value}"
        return AIMessage(content=body)
