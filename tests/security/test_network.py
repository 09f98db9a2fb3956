"""Sockets and URLs: a TCP listener on the host's 127.0.0.1 is the target of every route,
and it must see no connection at all."""

from __future__ import annotations

import time

import pytest

from tests.security.conftest import Listener, Sandbox, cli, refused

ROUTES = [
    (
        "import-socket",
        "import socket\nsocket.create_connection(('127.0.0.1', {port}))",
        "ImportError",
        "Module 'socket'",
    ),
    (
        "import-urllib",
        "import urllib.request\nurllib.request.urlopen('{url}')",
        "ImportError",
        "Module 'urllib.request'",
    ),
    (
        "import-http-client",
        "import http.client\nhttp.client.HTTPConnection('127.0.0.1', {port}).connect()",
        "ImportError",
        "Module 'http.client'",
    ),
    (
        "socket-via-plotly-get-module",
        "import plotly.basedatatypes as b\n"
        "b.get_module('socket').create_connection(('127.0.0.1', {port}))",
        "PolicyError",
        "get_module (from _plotly_utils.optional_imports)",
    ),
    (
        "urllib-via-sklearn-import-module",
        "import sklearn.utils.discovery as d\nd.import_module('urllib.request').urlopen('{url}')",
        "PolicyError",
        "import_module (from importlib)",
    ),
    (
        "socket-via-os-module-reexport",
        "import plotly.data as d\nd.os.system('curl {url}')",
        "PolicyError",
        "Module 'os'",
    ),
    (
        "pandas-read-csv-url",
        "import pandas as pd\npd.read_csv('{url}')",
        "PolicyError",
        "pandas.read_csv reads files or URLs",
    ),
    (
        "pandas-read-json-url",
        "import pandas as pd\npd.read_json('{url}')",
        "PolicyError",
        "pandas.read_json reads files or URLs",
    ),
    (
        "pandas-read-html-url",
        "import pandas as pd\npd.read_html('{url}')",
        "PolicyError",
        "pandas.read_html reads files or URLs",
    ),
    (
        "pandas-read-parquet-url",
        "import pandas as pd\npd.read_parquet('{url}')",
        "PolicyError",
        "pandas.read_parquet reads files or URLs",
    ),
    (
        "pandas-json-reader-class",
        "import pandas as pd\npd.api.typing.JsonReader('{url}')",
        "PolicyError",
        "JsonReader (from pandas.io.json._json)",
    ),
    (
        "numpy-loadtxt-url",
        "import numpy as np\nnp.loadtxt('{url}')",
        "PolicyError",
        "numpy.loadtxt reads files or URLs",
    ),
    (
        "numpy-genfromtxt-url",
        "import numpy as np\nnp.genfromtxt('{url}')",
        "PolicyError",
        "numpy.genfromtxt reads files or URLs",
    ),
    (
        "numpy-datasource",
        "import numpy as np\nnp.lib.npyio.DataSource().open('{url}')",
        "PolicyError",
        "Module 'numpy.lib.npyio' is not available",
    ),
    (
        "sklearn-fetch-openml",
        "from sklearn.datasets import fetch_openml\nfetch_openml(data_id=61, data_home='/tmp')",
        "PolicyError",
        "sklearn.datasets.fetch_openml reads files or the network",
    ),
    (
        "sklearn-fetch-california-housing",
        "import sklearn.datasets as d\nd.fetch_california_housing()",
        "PolicyError",
        "sklearn.datasets.fetch_california_housing reads files or the network",
    ),
    (
        "scipy-datasets",
        "import scipy.datasets\nscipy.datasets.face()",
        "ImportError",
        "Module 'scipy.datasets'",
    ),
    (
        "plotly-io-read-json",
        "import plotly.io as pio\npio.read_json('{url}')",
        "PolicyError",
        "plotly.io.read_json is not available",
    ),
    (
        # scipy's `workers=2` starts a multiprocessing pool: sockets and processes.
        "scipy-workers-pool",
        "from scipy import optimize\nimport numpy as np\n"
        "optimize.differential_evolution(np.sum, [(-2, 2)], workers=2, maxiter=2)",
        "PolicyError",
        "Starting processes is not available in the sandbox (multiprocessing.SemLock)",
    ),
]


def _settled(listener: Listener) -> int:
    time.sleep(0.2)  # a connection under way would be counted by now
    return listener.connections


@pytest.mark.parametrize(
    ("code", "kind", "fragment"), [r[1:] for r in ROUTES], ids=[r[0] for r in ROUTES]
)
def test_the_network_is_refused_and_the_listener_sees_nothing(
    sandbox: Sandbox, listener: Listener, code: str, kind: str, fragment: str
) -> None:
    result = sandbox.run(code.format(port=listener.port, url=listener.url))
    refused(result, kind, fragment)
    assert _settled(listener) == 0


def test_the_network_is_refused_through_the_cli_cold(listener: Listener) -> None:
    code = f"import pandas as pd\npd.read_csv('{listener.url}')"
    refused(cli(code), "PolicyError", "pandas.read_csv reads files or URLs")
    code = "import socket\nsocket.create_connection(('127.0.0.1', {port}))"
    refused(cli(code.format(port=listener.port)), "ImportError", "Module 'socket'")
    assert _settled(listener) == 0


@pytest.mark.slow
def test_the_network_is_refused_through_the_cli_warm_pool(listener: Listener) -> None:
    code = "import sklearn.datasets as d\nd.fetch_openml(data_id=61)"
    refused(cli(code, cold=False), "PolicyError", "fetch_openml reads files or the network")
    assert _settled(listener) == 0
