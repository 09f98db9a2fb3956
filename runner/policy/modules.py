"""The allow-list of modules and what a snippet may take from where (origins), and the
few names every part of the policy shares.
"""

from __future__ import annotations

import collections
import re
import sys
from collections.abc import Iterable
from typing import Any

from RestrictedPython.transformer import INSPECT_ATTRIBUTES

# --- modules ----------------------------------------------------------------------------------

ALLOWED_MODULES = frozenset(
    [
        "pandas",
        "numpy",
        "scipy",
        "statsmodels",
        "sklearn",
        "plotly",
        "math",
        "cmath",
        "statistics",
        "datetime",
        "json",
        "re",
        "collections",
        "itertools",
        "functools",
        "random",
        "decimal",
        "fractions",
        "string",
        # pure, or reading only the system's time-zone data (found refused by the docstring
        # examples of pandas, numpy and scipy: tests/bench/bench_refusals.py)
        "warnings",
        "zoneinfo",
        "pprint",
        "numbers",
    ]
)
# Submodules of allowed packages that read or write files, reach the network, pickle, build
# native code or run processes.
DENIED_MODULE_PREFIXES = (
    "pandas.io",
    "pandas.plotting",
    "pandas.compat",
    "pandas.core.computation",
    "pandas.util._",
    "numpy.f2py",
    "numpy.distutils",
    "numpy.testing.extbuild",
    "numpy.testing.overrides",
    "numpy.ctypeslib",
    "numpy.lib.format",
    "numpy.lib.npyio",
    "numpy.lib._npyio_impl",
    "numpy.lib._datasource",
    "numpy.compat",
    "plotly.io",
    "plotly.offline",
    "plotly.utils",
    "sklearn.externals",
    "sklearn.utils.parallel",
    "sklearn.utils._joblib",
    "scipy.io",
    "scipy.datasets",
    "scipy.misc",
    "scipy._lib",
    "statsmodels.iolib",
    "statsmodels.datasets",
    "json.tool",
)
# Modules whose functions and classes never reach user code, whichever library re-exports
# them: files, processes, network, interpreter internals, pickling.
DENIED_CALLABLE_MODULES = (
    *[
        "os",
        "posix",
        "nt",
        "posixpath",
        "ntpath",
        "genericpath",
        "pathlib",
        "subprocess",
        "shutil",
        "socket",
        "_socket",
        "ssl",
        "select",
        "selectors",
        "asyncio",
        "urllib",
        "http",
        "ftplib",
        "smtplib",
        "ctypes",
        "_ctypes",
        "mmap",
        "pickle",
        "_pickle",
        "copyreg",
        "marshal",
        "shelve",
        "dbm",
        "sqlite3",
        "importlib",
        "pkgutil",
        "zipimport",
        "inspect",
        "code",
        "codeop",
        "types",
        "gc",
        "sys",
        "threading",
        "_thread",
        "multiprocessing",
        "concurrent",
        "signal",
        "resource",
        "fcntl",
        "pty",
        "tty",
        "termios",
        "logging",
        "tempfile",
        "glob",
        "io",
        "_io",
        "zipfile",
        "tarfile",
        "gzip",
        "bz2",
        "lzma",
        "webbrowser",
        "platform",
        "sysconfig",
        "site",
        "atexit",
        "faulthandler",
        "tracemalloc",
        "weakref",
        "joblib",
        "loky",
        "cloudpickle",
        "dill",
        "fsspec",
        "requests",
        "urllib3",
        "pyarrow",
        "kaleido",
    ],
    *DENIED_MODULE_PREFIXES,
)
# Modules a snippet may import for a few vetted names only: in-memory text and byte
# buffers (parse pasted CSV, capture `df.info(buf=...)`), and pyarrow's type and container
# constructors (`pd.ArrowDtype(pa.int64())`). The rest of `io` opens files; the rest of
# pyarrow reads files and builds arrays over raw memory (`foreign_buffer`,
# `Array.from_buffers`), and what its constructors return keeps its methods refused (they
# come from pyarrow.lib, which is not vetted).
_PYARROW_NAMES = """int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64
bool_ string utf8 large_string large_utf8 string_view binary large_binary null date32 date64
time32 time64 timestamp duration month_day_nano_interval decimal128 decimal256 list_
large_list map_ struct dictionary field schema array chunked_array table record_batch scalar"""
PARTIAL_MODULES = {
    "io": frozenset({"StringIO", "BytesIO", "SEEK_SET", "SEEK_CUR", "SEEK_END"}),
    # facts about the interpreter, read-only
    "sys": frozenset({"byteorder", "maxsize", "float_info", "int_info", "version_info"}),
    # copies go through the objects' own reducers (copyreg's table stays out of reach)
    "copy": frozenset({"copy", "deepcopy", "Error"}),
    # with a function to time, never a string of code (`_timeit_checker`)
    "timeit": frozenset({"timeit", "repeat", "default_timer"}),
    "pyarrow": frozenset(_PYARROW_NAMES.split()),
    "pyarrow.compute": frozenset({"field"}),  # a column reference in an expression
    "plotly.io": frozenset({"templates"}),  # the theme registry (not the file writers)
}
# Namespaces that are private by convention without a leading underscore: a snippet
# cannot reach them as modules or import them (pandas.core's internals call methods by
# name, `frame_apply(df, "to_csv", ...)`, and build objects from parts). What the public
# API hands out from them (a GroupBy, its methods) stays usable.
PRIVATE_MODULE_PREFIXES = ("pandas.core", "numpy.core")
# Module name parts a snippet may not import: private modules and test suites.
_PRIVATE_PART = re.compile(r"^(_.*|tests?|conftest)$")

# Where the functions and classes a snippet may hold come from, besides the allowed
# libraries: modules vetted as computation only. Any other origin is refused, whichever
# allowed module re-exports it — files (`codecs.open`), evaluation (`typing`'s forward
# references), class factories (`dataclasses.make_dataclass`, enums), lazy importers
# (plotly's `get_module`), I/O wrappers (narwhals), interpreter internals (`types`,
# `traceback`, `inspect`), test frameworks. Judged on the module a function was really
# defined in (its globals), not on a `__module__` a library rewrote to look public.
VETTED_ORIGINS = (
    "builtins",
    "abc",
    "_abc",
    "functools",
    "_functools",
    "collections",
    "_collections",
    "_collections_abc",
    "itertools",
    "operator",
    "_operator",
    "math",
    "cmath",
    "numbers",
    "decimal",
    "_decimal",
    "_pydecimal",
    "fractions",
    "statistics",
    "datetime",
    "_datetime",
    "_pydatetime",
    "_strptime",
    "time",
    "calendar",
    "zoneinfo",
    "_zoneinfo",
    "re",
    "_sre",
    "json",
    "_json",
    "random",
    "_random",
    "string",
    "heapq",
    "_heapq",
    "bisect",
    "_bisect",
    "array",
    "textwrap",
    "difflib",
    "unicodedata",
    "copy",
    "contextlib",
    "warnings",
    "_warnings",
    "contextvars",
    "_contextvars",
    "reprlib",
    "keyword",
    "hashlib",
    "_hashlib",
    "base64",
    "binascii",
    "struct",
    "_struct",
    # the allowed libraries' own helpers and data types
    "dateutil.relativedelta",
    "dateutil._common",
    "dateutil.rrule",
    "_plotly_utils.basevalidators",
    "_plotly_utils.colors",
    "_plotly_utils.exceptions",
    "_plotly_utils.utils",
    "_plotly_utils.data_utils",
    "__quarry__",  # classes the snippet defines
)

# `f.__call__` is `f` (a ufunc's `__array_ufunc__` is handed the method name "__call__").
_ALLOWED_DUNDER_ATTRIBUTES = frozenset(
    {"__init__", "__name__", "__doc__", "__version__", "__call__"}
)
# Interpreter internals reachable without a leading underscore.
_ESCAPE_ATTRIBUTES = INSPECT_ATTRIBUTES | frozenset(
    {
        "gi_yieldfrom",
        "gi_suspended",
        "gi_running",
        "cr_await",
        "cr_origin",
        "cr_running",
        "cr_suspended",
        "ag_await",
        "ag_running",
        "f_lasti",
        "f_lineno",
        "tb_lasti",
        "tb_lineno",
        "mro",
        "func_globals",
        "func_code",
    }
)


class PolicyError(Exception):
    """Refused by the sandbox policy; the message says what to do instead."""


_FORMAT_REFUSED = (
    "{what} is not available in the sandbox: a template's replacement fields can look up "
    "attributes and items of what it formats ({{0.__class__}}); use an f-string, e.g. "
    "f'{{value:.2f}}'."
)


def _check_template(obj: Any) -> None:
    """`.format`/`.format_map` of a literal template is fine when none of its fields looks
    anything up (`'{:.1f}'.format`, as a callable too); the unbound `str.format`, templates
    of str subclasses, `collections.UserString` (whose template is mutable `.data`) and any
    other class' `format` built on them are not. CVE-2023-37271 and the format-string
    escapes of RestrictedPython's advisories start here."""
    if isinstance(obj, type):
        if issubclass(obj, str | collections.UserString):
            raise PolicyError(_FORMAT_REFUSED.format(what=f"{obj.__name__}.format"))
        return
    if isinstance(obj, collections.UserString) or (isinstance(obj, str) and type(obj) is not str):
        raise PolicyError(_FORMAT_REFUSED.format(what=f"{type(obj).__name__}.format"))
    if type(obj) is str and _FORMAT_WALK.search(obj):
        raise PolicyError(
            f"format templates that look up attributes or items ({obj[:40]!r}) are not "
            "available in the sandbox; name what to format, e.g. '{:.2f}'.format(x) or "
            "an f-string."
        )


def _within(name: str, prefixes: Iterable[str]) -> bool:
    # "pkg.mod" covers itself and its submodules; a prefix ending in "_" covers every
    # private name beginning with it.
    return any(
        name == p or name.startswith(p + ".") or (p.endswith("_") and name.startswith(p))
        for p in prefixes
    )


def module_allowed(name: str) -> bool:
    return (
        name.split(".", 1)[0] in ALLOWED_MODULES
        and not _within(name, DENIED_MODULE_PREFIXES)
        and not _within(name, PRIVATE_MODULE_PREFIXES)
    )


def module_importable(name: str) -> bool:
    """`import x.y` in a snippet: an allowed module, none of whose parts is private or a
    test suite (`pandas._testing` round-trips pickles, test modules write files)."""
    return module_allowed(name) and not any(_PRIVATE_PART.match(p) for p in name.split("."))


def _denied_module(name: str) -> bool:
    return _within(name, DENIED_CALLABLE_MODULES)


def origin_allowed(module: str) -> bool:
    if _denied_module(module):
        return False
    top = module.split(".", 1)[0]
    if top in ALLOWED_MODULES or _within(module, VETTED_ORIGINS):
        return True
    # Any other real module (the standard library, narwhals, pyarrow, typing...) is not
    # vetted. A name that is no module at all is what compiled extensions inside the
    # allowed libraries report (`_csparsetools`): theirs.
    return top not in sys.stdlib_module_names and top not in sys.modules


# Code compiled from a snippet carries this file name: the audit hook and the runner
# tell snippet frames by it.
SNIPPET_FILENAME = "<snippet>"


# Objects the snippet changed in place (`df["z"] = ...`, `df.fillna(0, inplace=True)`):
# the runner keeps a changed dataset or workspace frame without hashing every loaded one.
WRITTEN: set[int] = set()


# A replacement field whose name goes on with `.attr` or `[key]`: `{0.__class__}`. A
# position (`{0[1]}`) looks up nothing by name.
_FORMAT_WALK = re.compile(r"\{[^{}:!]*(\.|\[(?!\d+\]))")
