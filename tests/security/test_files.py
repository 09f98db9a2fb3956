"""Reading, writing and deleting files: every route is refused, and nothing on the host
changes. Reads are also checked for their effect: no result ever holds the host's
/etc/passwd, the worker's source or a secret (conftest checks every result)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.conftest import (
    PASSWD_SENTINEL,
    WORKER_SENTINEL,
    WORKER_SOURCE,
    Sandbox,
    cli,
    refused,
)

_NOT_AVAILABLE = "is not available in the sandbox"
_READING = "Reading files is not available in the sandbox"

READS = [
    (
        "builtin-open",
        "open('/etc/passwd').read()",
        "PolicyError",
        "open() is not available in the sandbox",
    ),
    ("io-open", "import io\nio.open('/etc/passwd').read()", "PolicyError", "io.open is not"),
    (
        "builtins-via-numpy-ma",
        "import numpy as np\nnp.ma.core.builtins.open('/etc/passwd').read()",
        "PolicyError",
        "Module 'builtins' is not available",
    ),
    (
        "io-via-pandas",
        "import pandas as pd\npd.io.common.open('/etc/passwd')",
        "PolicyError",
        "Module 'pandas.io' is not available",
    ),
    (
        "codecs-via-json",
        "import json\njson.codecs.open('/etc/passwd').read()",
        "PolicyError",
        "Module 'codecs' is not available",
    ),
    (
        "codecs-via-plotly-get-module",
        "import plotly.basedatatypes as b\nb.get_module('codecs').open('/etc/passwd').read()",
        "PolicyError",
        "get_module (from _plotly_utils.optional_imports)",
    ),
    (
        "pathlib-via-sklearn",
        "import sklearn.utils.discovery as d\nd.Path('/etc/passwd').read_text()",
        "PolicyError",
        "Path (from pathlib)",
    ),
    (
        "scipy-reader-etc-passwd",
        "import scipy.sparse as sp\nsp.load_npz('/etc/passwd')",
        "PolicyError",
        _READING + " ('/etc/passwd')",
    ),
    (
        "scipy-reader-proc-self-environ",
        "import scipy.sparse as sp\nsp.load_npz('/proc/self/environ')",
        "PolicyError",
        _READING + " ('/proc/self/environ')",
    ),
    (
        "scipy-reader-worker-source",
        f"import scipy.sparse as sp\nsp.load_npz({str(WORKER_SOURCE)!r})",
        "PolicyError",
        _READING,
    ),
    (
        "scipy-reader-relative-escape",
        "import scipy.sparse as sp\nsp.load_npz('../../../../etc/passwd')",
        "PolicyError",
        _READING,
    ),
    (
        "pandas-read-csv",
        "import pandas as pd\npd.read_csv('/etc/passwd', sep=':', header=None)",
        "PolicyError",
        "pandas.read_csv reads files or URLs",
    ),
    (
        "pandas-read-json",
        "import pandas as pd\npd.read_json('/proc/self/environ')",
        "PolicyError",
        "pandas.read_json reads files or URLs",
    ),
    (
        "pandas-read-fwf",
        "import pandas as pd\npd.read_fwf('/etc/passwd')",
        "PolicyError",
        "pandas.read_fwf reads files or URLs",
    ),
    (
        "pandas-stata-reader-class",
        "import pandas as pd\npd.api.typing.StataReader('/etc/passwd')",
        "PolicyError",
        "StataReader (from pandas.io.stata)",
    ),
    (
        "numpy-loadtxt",
        "import numpy as np\nnp.loadtxt('/etc/passwd', dtype=str, delimiter=':')",
        "PolicyError",
        "numpy.loadtxt reads files or URLs",
    ),
    (
        "numpy-genfromtxt",
        "import numpy as np\nnp.genfromtxt('/etc/passwd', dtype=str)",
        "PolicyError",
        "numpy.genfromtxt reads files or URLs",
    ),
    (
        "numpy-fromfile",
        "import numpy as np\nnp.fromfile('/etc/passwd', dtype='u1')",
        "PolicyError",
        "numpy.fromfile touches files",
    ),
    (
        "numpy-rec-fromfile",
        "import numpy as np\nnp.rec.fromfile('/etc/passwd', dtype='u1')",
        "PolicyError",
        "numpy.rec.fromfile reads files",
    ),
    (
        "numpy-memmap",
        "import numpy as np\nnp.memmap('/etc/passwd', dtype='u1', mode='r')",
        "PolicyError",
        "numpy.memmap touches files",
    ),
    (
        "json-load",
        "import json\njson.load(open('/etc/passwd'))",
        "PolicyError",
        "open() is not available in the sandbox",
    ),
    (
        # A path that answers every check as the library directory would, then is read.
        "str-subclass-posing-as-library-path",
        "import scipy.sparse as sp\n"
        "class LibraryPath(str):\n"
        "    def startswith(self, *args):\n"
        "        return True\n"
        "    def __eq__(self, other):\n"
        "        return True\n"
        "sp.load_npz(LibraryPath('/etc/passwd'))",
        "PolicyError",
        _READING + " ('/etc/passwd')",
    ),
    (
        "fspath-object-posing-as-safe-path",
        "class SafePath:\n"
        "    def __fspath__(self):\n"
        "        return '/etc/passwd'\n"
        "import scipy.sparse as sp\n"
        "sp.load_npz(SafePath())",
        "PolicyError",
        '"__fspath__" is an invalid variable name',
    ),
    (
        # typing evaluates string annotations with the real builtins, and its TypeError
        # echoes the value it got: the file's first line.
        "error-message-echo-via-typing",
        "def f(x: \"open('/etc/passwd').read()\"):\n"
        "    pass\n"
        "import plotly.basedatatypes as b\n"
        "b.get_module('typing').get_type_hints(f, {})",
        "PolicyError",
        "get_module (from _plotly_utils.optional_imports)",
    ),
]

ENVIRONMENT = [
    (
        "os-environ-via-plotly-data",
        "import plotly.data as d\nd.os.environ",
        "PolicyError",
        "Module 'os' is not available",
    ),
    (
        "os-environ-via-sklearn",
        "import sklearn\ndict(sklearn.os.environ)",
        "PolicyError",
        "Module 'os' is not available",
    ),
    (
        "sys-modules-os-via-datetime",
        "import datetime\ndatetime.sys.modules['os'].environ",
        "PolicyError",
        "Module 'sys' is not available",
    ),
    ("import-os", "import os\nos.environ", "ImportError", "Module 'os' is not available"),
    (
        "getenv-via-from-import",
        "from plotly.data import os\nos.getenv('DATABASE_URL')",
        "PolicyError",
        "Module 'os' is not available",
    ),
    (
        "pandas-show-versions",
        "import pandas as pd\npd.show_versions(as_json=True)",
        "PolicyError",
        "show_versions (from pandas.util._print_versions)",
    ),
    (
        "proc-environ-via-numpy",
        "import numpy as np\nnp.fromfile('/proc/self/environ', dtype='u1').tobytes()",
        "PolicyError",
        "numpy.fromfile touches files",
    ),
]


def test_the_leak_checks_can_see_a_leak() -> None:
    """What every result is checked for is really in the files the attacks aim at."""
    assert PASSWD_SENTINEL in Path("/etc/passwd").read_text()
    assert WORKER_SENTINEL in WORKER_SOURCE.read_text()


@pytest.mark.parametrize(
    ("code", "kind", "fragment"), [r[1:] for r in READS], ids=[r[0] for r in READS]
)
def test_reading_a_file_is_refused(sandbox: Sandbox, code: str, kind: str, fragment: str) -> None:
    refused(sandbox.run(code), kind, fragment)


@pytest.mark.parametrize(
    ("code", "kind", "fragment"), [r[1:] for r in ENVIRONMENT], ids=[r[0] for r in ENVIRONMENT]
)
def test_the_environment_is_out_of_reach(
    sandbox: Sandbox, code: str, kind: str, fragment: str
) -> None:
    refused(sandbox.run(code), kind, fragment)


WRITES = [
    ("to-csv", "df.to_csv({path!r})", "to_csv() cannot write files"),
    ("to-csv-keyword", "df.to_csv(path_or_buf={path!r})", "to_csv() cannot write files"),
    ("to-json", "df.to_json({path!r})", "to_json() cannot write files"),
    ("to-html-buf", "df.to_html(buf={path!r})", "to_html() cannot write files"),
    ("to-parquet", "df.to_parquet({path!r})", "to_parquet() cannot write files"),
    (
        "to-parquet-partitioned-directory",
        "df.to_parquet({path!r}, partition_cols=['a'])",
        "to_parquet() cannot write files",
    ),
    ("to-xml-path-or-buffer", "df.to_xml(path_or_buffer={path!r})", "to_xml() cannot write"),
    ("to-pickle", "df.to_pickle({path!r})", "to_pickle() writes files"),
    ("to-excel", "df.to_excel({path!r})", "to_excel() writes files"),
    ("to-feather", "df.to_feather({path!r})", "to_feather() writes files"),
    ("series-to-csv", "df['a'].to_csv({path!r})", "to_csv() cannot write files"),
    ("unbound-to-csv", "pd.DataFrame.to_csv(df, {path!r})", "to_csv() cannot write files"),
    ("base-class-to-csv", "super(pd.DataFrame, df).to_csv({path!r})", "to_csv() cannot write"),
    ("pipe-to-csv", "df.pipe(pd.DataFrame.to_csv, {path!r})", "to_csv() cannot write files"),
    ("agg-by-name", "df.agg('to_csv', {path!r})", "cannot call 'to_csv' by name"),
    (
        "groupby-apply-by-name",
        "df.groupby('a').apply('to_pickle', {path!r})",
        "cannot call 'to_pickle' by name",
    ),
    ("query-method-call", "df.query(\"a.to_csv('{path}') == 0\")", "plain column expressions"),
    ("eval-method-call", "df.eval(\"a.to_pickle('{path}')\")", "plain column expressions"),
    (
        "pd-col-deferred",
        "df.assign(x=pd.col('a').to_csv({path!r}))",
        "is not available in a deferred expression",
    ),
    ("pandas-core-frame-apply", "pd.core.apply.frame_apply(df, 'to_csv')", "'pandas.core'"),
    ("np-save", "np.save({path!r}, np.arange(3))", "numpy.save touches files"),
    ("np-savetxt", "np.savetxt({path!r}, np.arange(3))", "numpy.savetxt touches files"),
    ("ndarray-tofile", "np.arange(3).tofile({path!r})", "ndarray.tofile writes files"),
    ("ndarray-dump", "np.arange(3).dump({path!r})", "ndarray.dump writes files"),
    (
        "scipy-save-npz",
        "import scipy.sparse as sp\nsp.save_npz({path!r}, sp.csr_matrix(np.eye(2)))",
        "Writing files is not available in the sandbox",
    ),
    ("plotly-write-html", "px.bar(df, x='a', y='b').write_html({path!r})", "fig.write_html()"),
    ("plotly-write-json", "px.bar(df, x='a', y='b').write_json({path!r})", "fig.write_json()"),
    (
        "graphviz-out-file",
        "from sklearn.tree import DecisionTreeClassifier, export_graphviz\n"
        "tree = DecisionTreeClassifier().fit(df[['a']], df['b'])\n"
        "export_graphviz(tree, out_file={path!r})",
        "export_graphviz cannot write files",
    ),
    (
        "sklearn-pipeline-memory-cache",
        "from sklearn.pipeline import Pipeline\n"
        "from sklearn.preprocessing import StandardScaler\n"
        "from sklearn.linear_model import LinearRegression\n"
        "steps = [('s', StandardScaler()), ('m', LinearRegression())]\n"
        "Pipeline(steps, memory={path!r}).fit(df[['a']], df['b'])",
        "(os.mkdir)",
    ),
    (
        # ODRPACK writes its report from Fortran: no audit event would see it.
        "scipy-odr-report-file",
        "import scipy.odr as odr\n"
        "odr.odr(lambda b, x: b[0] * x, [1.0], [1.0, 2.0], [1.0, 2.0], rptfile={path!r})",
        "odr() cannot write report files",
    ),
]
_WRITE_SETUP = (
    "import pandas as pd\nimport numpy as np\nimport plotly.express as px\n"
    "df = pd.DataFrame({{'a': [1, 2, 3], 'b': [4.0, 5.0, 6.0]}})\n"
)


@pytest.mark.parametrize(("code", "fragment"), [w[1:] for w in WRITES], ids=[w[0] for w in WRITES])
def test_writing_a_file_is_refused_and_nothing_appears_on_the_host(
    sandbox: Sandbox, host_path: Path, code: str, fragment: str
) -> None:
    result = sandbox.run((_WRITE_SETUP + code).format(path=str(host_path)))
    refused(result, "PolicyError", fragment)
    assert not host_path.exists()


DELETES = [
    ("os-remove-via-plotly", "import plotly.data as d\nd.os.remove({path!r})", "Module 'os'"),
    (
        "pathlib-unlink-via-sklearn",
        "import sklearn.utils.discovery as d\nd.Path({path!r}).unlink()",
        "Path (from pathlib)",
    ),
    (
        "shutil-via-get-module",
        "import plotly.basedatatypes as b\nb.get_module('shutil').rmtree({path!r})",
        "get_module (from _plotly_utils.optional_imports)",
    ),
]


@pytest.mark.parametrize(
    ("code", "fragment"), [d[1:] for d in DELETES], ids=[d[0] for d in DELETES]
)
def test_deleting_a_host_file_is_refused_and_the_file_stays(
    sandbox: Sandbox, host_path: Path, code: str, fragment: str
) -> None:
    host_path.write_text("keep me")
    result = sandbox.run(code.format(path=str(host_path)))
    refused(result, "PolicyError", fragment)
    assert host_path.read_text() == "keep me"


def test_reads_are_refused_through_the_cli_cold() -> None:
    """The operator's entry point, a fresh interpreter per snippet."""
    refused(
        cli("open('/etc/passwd').read()"), "PolicyError", "open() is not available in the sandbox"
    )
    refused(
        cli(f"import scipy.sparse as sp\nsp.load_npz({str(WORKER_SOURCE)!r})"),
        "PolicyError",
        _READING,
    )
    refused(cli("import datetime\ndatetime.sys"), "PolicyError", "Module 'sys'")


def test_writes_are_refused_through_the_cli_cold(host_path: Path) -> None:
    code = (_WRITE_SETUP + "df.to_parquet({path!r})").format(path=str(host_path))
    refused(cli(code), "PolicyError", "to_parquet() cannot write files")
    code = f"import numpy as np\nnp.save({str(host_path)!r}, np.arange(3))"
    refused(cli(code), "PolicyError", "numpy.save touches files")
    assert not host_path.exists()


@pytest.mark.slow
def test_files_are_refused_through_the_cli_warm_pool(host_path: Path) -> None:
    code = (
        "import scipy.sparse as sp\nimport numpy as np\n"
        f"sp.save_npz({str(host_path)!r}, sp.csr_matrix(np.eye(2)))"
    )
    refused(cli(code, cold=False), "PolicyError", "Writing files is not available")
    assert not host_path.exists()
