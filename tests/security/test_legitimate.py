"""Ordinary analysis works through the same sandbox and the same policy: describe,
group-bys, a plotly chart, a scikit-learn fit, scipy statistics, the everyday Python the
issue lists, and the session workspace carried from one snippet to the next."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.security.conftest import Sandbox, cli

ANALYSIS = """
import pandas as pd
import plotly.express as px
from scipy import stats
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import train_test_split

summary = df.describe()
by_education = df.groupby('education')['income'].agg(['mean', 'count']).reset_index()
fig = px.bar(by_education, x='education', y='mean', title='Income by education')
model = LinearRegression().fit(df[['age']], df['income'])
r2 = round(float(model.score(df[['age']], df['income'])), 4)
test = stats.pearsonr(df['age'], df['income'])
print('mean age', df['age'].mean(), 'r2', r2, 'p<0.001', bool(test.pvalue < 0.001))
by_education
"""


def _check_analysis(result: dict) -> None:
    assert result["error"] is None, result["error"]
    assert result["stdout"] == "mean age 42.5 r2 0.9968 p<0.001 True\n"
    (table,) = result["tables"]
    assert table["columns"] == ["education", "mean", "count"]
    assert table["rows"] == [
        ["BS", 50000.0, 2],
        ["HS", 30000.0, 1],
        ["MS", 70000.0, 2],
        ["PhD", 95000.0, 3],
    ]
    (figure,) = result["figures"]
    assert figure["data"][0]["type"] == "bar"
    assert figure["layout"]["title"]["text"] == "Income by education"
    kept = {entry["name"]: entry for entry in result["workspace"]}
    assert {"summary", "by_education", "r2"} <= set(kept)
    assert kept["r2"] == {"name": "r2", "kind": "value", "value": 0.9968}
    assert kept["summary"]["shape"] == [8, 2]


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_an_analysis_of_a_dataset_through_the_cli_cold(census: dict[str, Path], fmt: str) -> None:
    _check_analysis(cli(ANALYSIS, datasets={"df": census[fmt]}, timeout=60))


@pytest.mark.slow
def test_an_analysis_of_a_dataset_through_the_cli_warm_pool(census: dict[str, Path]) -> None:
    _check_analysis(cli(ANALYSIS, cold=False, datasets={"df": census["arrow"]}, timeout=60))


def test_an_analysis_of_a_dataset_in_the_warm_pool(
    sandbox: Sandbox, census: dict[str, Path]
) -> None:
    dataset = {"name": "df", "path": str(census["arrow"]), "format": "arrow"}
    _check_analysis(sandbox.run(ANALYSIS, datasets=[dataset], timeout_s=60))


ORDINARY = [
    ("new-column", "df['z'] = df['age'] * 2\nint(df['z'].sum())", "680"),
    (
        "masked-loc-write",
        "m = df['age'] > 50\ndf.loc[m, 'income'] = 0\nint(df['income'].sum())",
        "355000",
    ),
    (
        "numpy-masked-write",
        "import numpy as np\na = np.arange(6)\na[a > 3] = 0\na.tolist()",
        "[0, 1, 2, 3, 0, 0]",
    ),
    (
        "dict-augmented-item",
        "d = {}\nfor w in df['workclass']:\n    d[w] = d.get(w, 0)\n    d[w] += 1\nd",
        "{'Private': 4, 'Gov': 2, 'Self': 2}",
    ),
    ("frame-augmented-column", "df['age'] += 1\nint(df['age'].iloc[0])", "26"),
    (
        "small-class",
        "class Counter:\n"
        "    def __init__(self):\n"
        "        self.n = 0\n"
        "    def add(self, k):\n"
        "        self.n += k\n"
        "        return self\n"
        "Counter().add(2).add(3).n",
        "5",
    ),
    (
        "subclass-with-super",
        "class Base:\n"
        "    def __init__(self, x):\n"
        "        self.x = x\n"
        "class Child(Base):\n"
        "    def __init__(self, x):\n"
        "        super().__init__(x * 2)\n"
        "Child(4).x",
        "8",
    ),
    (
        "builtins",
        "sorted(zip(['b', 'a'], [2, 1])), tuple(reversed([1, 2, 3])), max(df['age'])",
        "([('a', 1), ('b', 2)], (3, 2, 1), 60)",
    ),
    (
        "comprehensions-and-unpacking",
        "a, *rest = [k for k, _ in df.groupby('education')]\n(a, len(rest))",
        "('BS', 3)",
    ),
    (
        "to-csv-without-path",
        "df.head(2).to_csv(index=False).splitlines()[1]",
        "'25,30000,HS,Private'",
    ),
    (
        "to-json-without-path",
        "df[['age']].head(1).to_json(orient='records')",
        "'[{\"age\":25}]'",
    ),
    ("to-html-without-path", "'<table' in df.head(2).to_html()", "True"),
    (
        "to-string-float-format",
        "df[['age']].head(1).astype(float).to_string(float_format='%.1f')",
        "'   age\\n0 25.0'",
    ),
    (
        "annotated-function",
        "def rate(x: float, *rest: int, scale: float = 1.5) -> float:\n"
        "    return x * scale\n"
        "rate(2)",
        "3.0",
    ),
    ("f-string", "x = df['age'].mean()\nf'{x:.1f} years'", "'42.5 years'"),
    (
        "query-and-eval",
        "a = df.query('age > 40 and income < 90000')['age'].sum()\n"
        "int(a + df.eval('age * 2').sum())",
        "775",
    ),
    (
        "agg-by-name",
        "df.groupby('workclass')['income'].agg('mean').round().to_dict()",
        "{'Gov': 65000.0, 'Private': 56250.0, 'Self': 100000.0}",
    ),
    (
        "display-option",
        "import pandas as pd\n"
        "pd.set_option('display.max_rows', 5)\n"
        "pd.options.display.precision = 2\n"
        "pd.get_option('display.max_rows')",
        "5",
    ),
    (
        "pivot-and-merge",
        "import pandas as pd\n"
        "p = df.pivot_table(index='education', values='income', aggfunc='mean')\n"
        "len(df.merge(p, left_on='education', right_index=True))",
        "8",
    ),
    (
        "datetime-and-statistics",
        "import datetime, statistics\n"
        "day = datetime.date(2024, 1, 31) + datetime.timedelta(days=1)\n"
        "day.isoformat(), statistics.median(df['age'])",
        "('2024-02-01', 42.5)",
    ),
    (
        "json-and-re",
        "import json, re\njson.dumps({'n': len(re.findall('P', ''.join(df['workclass'])))})",
        "'{\"n\": 4}'",
    ),
    (
        "collections-and-itertools",
        "import collections, itertools\n"
        "top = collections.Counter(df['education']).most_common(1)\n"
        "top, list(itertools.islice(itertools.count(), 3))",
        "([('PhD', 3)], [0, 1, 2])",
    ),
    (
        "sklearn-pipeline-n-jobs",
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import StandardScaler\n"
        "from sklearn.ensemble import RandomForestRegressor\n"
        "forest = RandomForestRegressor(n_estimators=10, n_jobs=-1, random_state=0)\n"
        "p = make_pipeline(StandardScaler(), forest).fit(df[['age']], df['income'])\n"
        "p.score(df[['age']], df['income']) > 0.9",
        "True",
    ),
    (
        "sklearn-kmeans",  # threadpoolctl lists the loaded libraries: no /proc in here
        "import collections\nfrom sklearn.cluster import KMeans\n"
        "model = KMeans(n_clusters=2, n_init=3, random_state=0).fit(df[['age', 'income']])\n"
        "sorted(collections.Counter(model.labels_).values())",
        "[4, 4]",
    ),
    (
        "numpy-scalars-print-plainly",
        "import numpy as np\nnp.int64(3), np.float64(0.5), df['age'].max() > 50",
        "(3, 0.5, True)",
    ),
    (
        "scipy-optimize-and-ttest",
        "from scipy import optimize, stats\n"
        "x = optimize.minimize_scalar(lambda x: (x - 3) ** 2).x\n"
        "round(float(x), 3), bool(stats.ttest_ind(df['age'][:4], df['age'][4:]).pvalue < 0.05)",
        "(3.0, True)",
    ),
    (
        "plotly-histogram",
        "import plotly.express as px\npx.histogram(df, x='age', nbins=4).layout.xaxis.title.text",
        "'age'",
    ),
    # a snippet's own classes: private state, helper names, protocol methods
    (
        "own-class-private-state",
        "class Acc:\n    def __init__(self):\n        self._n = 0\n"
        "    def add(self, x):\n        self._n += x\n        return self\n"
        "    def __len__(self):\n        return self._n\n"
        "    def __repr__(self):\n        return f'Acc({self._n})'\n"
        "a = Acc().add(2).add(3)\nlen(a), repr(a), hasattr(a, '_other')",
        "(5, 'Acc(5)', False)",
    ),
    (
        "underscore-helper-names",
        "def _scale(_x):\n    return _x * 2\n_total = 0\nfor _ in range(3):\n"
        "    _total += _scale(1)\n_total",
        "6",
    ),
    (
        "protocol-methods",
        "class V:\n    def __init__(self, x):\n        self.x = x\n"
        "    def __add__(self, o):\n        return V(self.x + o.x)\n"
        "    def __call__(self, k):\n        return self.x * k\n(V(1) + V(2))(10)",
        "30",
    ),
    (
        "scipy-distribution-subclass",  # scipy.stats.rv_continuous' documented example
        "import numpy as np\nfrom scipy.stats import rv_continuous\n"
        "class gaussian_gen(rv_continuous):\n    def _pdf(self, x):\n"
        "        return np.exp(-x**2 / 2.) / np.sqrt(2.0 * np.pi)\n"
        "round(float(gaussian_gen(name='gaussian').cdf(0)), 3)",
        "0.5",
    ),
    ("itertuples-asdict", "[r._asdict()['age'] for r in df.head(2).itertuples()]", "[25, 30]"),
    ("library-version", "import numpy as np\nisinstance(np.__version__, str)", "True"),
    # in-memory files: parse pasted text, capture df.info(), round-trip bytes
    (
        "read-csv-from-text",
        "import io\nimport pandas as pd\n"
        "int(pd.read_csv(io.StringIO('a,b\\n1,2\\n3,4'))['b'].sum())",
        "6",
    ),
    (
        "info-into-a-buffer",
        "import io\nbuffer = io.StringIO()\ndf.info(buf=buffer)\n"
        "'Data columns' in buffer.getvalue()",
        "True",
    ),
    (
        "parquet-round-trip-in-memory",
        "import io\nimport pandas as pd\nf = io.BytesIO()\ndf.to_parquet(f)\n_ = f.seek(0)\n"
        "pd.read_parquet(f).shape",
        "(8, 4)",
    ),
    (
        "loadtxt-from-text",
        "import numpy as np\nfrom io import StringIO\nnp.loadtxt(StringIO('1 2\\n3 4')).sum()",
        "10.0",
    ),
    ("sys-byteorder", "import sys\nsys.byteorder in ('little', 'big')", "True"),
    (
        "deepcopy",
        "import copy\nrows = [[1, 2], [3]]\nc = copy.deepcopy(rows)\nc[0][0] = 9\nrows[0][0]",
        "1",
    ),
    ("timeit-a-function", "from timeit import timeit\ntimeit(lambda: 1, number=3) >= 0", "True"),
    ("format-by-position", "'{0[0]}-{0[1]}'.format(('a', 'b'))", "'a-b'"),
    (
        "json-lines-in-chunks",
        "import io\nimport pandas as pd\n"
        'r = pd.read_json(io.StringIO(\'{"a": 1}\\n{"a": 2}\\n\'), lines=True, chunksize=1)\n'
        "n = sum(len(chunk) for chunk in r)\nr.close()\nn",
        "2",
    ),
    (
        "arrow-dtype",
        "import pandas as pd\nimport pyarrow as pa\n"
        "s = pd.Series([[1, 2], [3]], dtype=pd.ArrowDtype(pa.list_(pa.int64())))\n"
        "s.list.len().tolist()",
        "[2, 1]",
    ),
    (
        "json-normalize",
        "import pandas as pd\npd.json_normalize([{'a': {'b': 1}}]).columns.tolist()",
        "['a.b']",
    ),
]


@pytest.mark.parametrize(
    ("code", "expected"), [o[1:] for o in ORDINARY], ids=[o[0] for o in ORDINARY]
)
def test_ordinary_analysis_works(
    sandbox: Sandbox, census: dict[str, Path], code: str, expected: str
) -> None:
    dataset = {"name": "df", "path": str(census["arrow"]), "format": "arrow"}
    result = sandbox.run(code, datasets=[dataset], timeout_s=60)
    assert result["error"] is None, result["error"]
    assert result["result"] == expected


def test_the_workspace_carries_a_frame_to_the_next_snippet(
    sandbox: Sandbox, census: dict[str, Path], tmp_path: Path
) -> None:
    dataset = {"name": "df", "path": str(census["parquet"]), "format": "parquet"}
    first = sandbox.run("young = df[df['age'] < 40]\nthreshold = 40", datasets=[dataset])
    assert first["error"] is None
    kept = {entry["name"]: entry for entry in first["workspace"]}
    assert kept["threshold"] == {"name": "threshold", "kind": "value", "value": 40}
    assert kept["young"]["kind"] == "dataframe"
    assert kept["young"]["shape"] == [3, 4]
    frame = tmp_path / "young.arrow"
    frame.write_bytes(base64.b64decode(kept["young"]["arrow"]))
    value = tmp_path / "threshold.json"
    value.write_text(json.dumps(kept["threshold"]["value"]))
    workspace = [
        {"name": "young", "path": str(frame), "kind": "dataframe"},
        {"name": "threshold", "path": str(value), "kind": "value"},
    ]
    second = sandbox.run(
        "print(len(young), bool(young['age'].max() < threshold))\nyoung['education'].tolist()",
        workspace=workspace,
    )
    assert second["error"] is None, second["error"]
    assert second["stdout"] == "3 True\n"
    assert second["result"] == "['HS', 'BS', 'BS']"
    # The workspace files were read-only for the snippet: unchanged.
    assert frame.read_bytes() == base64.b64decode(kept["young"]["arrow"])
