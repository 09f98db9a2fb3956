"""The language layer of the sandbox: RestrictedPython with Quarry's policy.

This layer makes the common ways out fail early with a message the model can act on. It is
not the security boundary: pandas, numpy, plotly and scikit-learn run unguarded inside, so
the process (or container, or pod) around the runner is what holds when this layer is
bypassed. See docs/SECURITY.md.

What it does:
- compiles with a RestrictedPython transformer (plus `d[k] += 1`, `obj.x += 1` and
  `super().__init__()`, which plain RestrictedPython refuses but analysis code needs);
- guards every attribute read (`_getattr_`): no names starting with `_`, no frame/code/
  generator internals, no `str.format`, and every value handed out is checked: modules
  only from the allow-list (and then behind a proxy), functions and classes only from the
  allowed libraries or vetted pure modules, judged by where they were really defined
  (pandas re-exports `os`, numpy `ctypes`, scikit-learn `joblib`, plotly a lazy importer),
  no metaclasses, library I/O refused with a message, writer methods only without a path;
- guards item access, iteration, unpacking, writes and in-place operators;
- gives a vetted set of builtins and an import hook that knows the allow-list (no private
  or test modules);
- keeps the libraries' item-as-attribute containers from answering dunder lookups (numpy
  would take a `__array_interface__` item as raw memory);
- installs an audit hook (PEP 578): while snippet code is on the stack, whatever library
  it calls cannot open files outside the installed libraries, list directories, make
  sockets, start processes, unpickle globals or reach interpreter internals.
"""

from __future__ import annotations

import ast
import builtins
import collections
import contextlib
import functools
import importlib
import inspect
import io
import operator
import os
import re
import string
import sys
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from RestrictedPython.compile import compile_restricted_eval, compile_restricted_exec
from RestrictedPython.Guards import (
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safe_builtins,
)
from RestrictedPython.transformer import INSPECT_ATTRIBUTES, RestrictingNodeTransformer

from runner import private

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


class ModuleProxy:
    """What user code gets for an allowed module: attribute reads go through the guard,
    writes are refused, and the real module object is never handed out."""

    __slots__ = ("_quarry_module",)

    def __init__(self, module: types.ModuleType) -> None:
        object.__setattr__(self, "_quarry_module", module)

    def __getattr__(self, name: str) -> Any:
        module = object.__getattribute__(self, "_quarry_module")
        return GUARD.getattr(module, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise PolicyError("Modules cannot be changed in the sandbox.")

    def __delattr__(self, name: str) -> None:
        raise PolicyError("Modules cannot be changed in the sandbox.")

    def __repr__(self) -> str:
        return f"<module '{object.__getattribute__(self, '_quarry_module').__name__}'>"

    def __dir__(self) -> list[str]:
        module = object.__getattribute__(self, "_quarry_module")
        return [n for n in dir(module) if not n.startswith("_")]


def _partial_submodule(package: types.ModuleType, name: str) -> ModuleProxy | None:
    """`package.name` when it is the package's own submodule and one of `PARTIAL_MODULES`
    (never a module some other module imported: `datetime.sys` stays refused)."""
    value = getattr(package, name, None)
    full = f"{package.__name__}.{name}"
    if isinstance(value, types.ModuleType) and value.__name__ == full and full in PARTIAL_MODULES:
        return ModuleProxy(value)
    return None


def unwrap_module(value: Any) -> Any:
    if type(value) is ModuleProxy:
        return object.__getattribute__(value, "_quarry_module")
    return value


# --- library rules ----------------------------------------------------------------------------

_NO_FILES = (
    "The sandbox has no files, network or processes. Datasets are already loaded as "
    "DataFrames under their names; show results by leaving them as the last expression, "
    "printing them, or keeping them in variables (figures are captured automatically)."
)
_WRITER_HINT = (
    "call it without a path (it then returns the text or bytes), or give it an "
    "io.StringIO / io.BytesIO, instead"
)
# In-memory files: what a reader may read and a writer may write.
_MEMORY_FILES = (io.StringIO, io.BytesIO)


def _in_memory(value: Any) -> bool:
    return type(value) in _MEMORY_FILES


_PATH_KEYWORDS = ("path_or_buf", "buf", "path", "excel_writer", "fname", "filename", "file")
_BACKTICKED = re.compile(r"`[^`\n]+`")
_SAFE_QUERY = re.compile(r"^[\w\s.()\[\]<>=!&|~+\-*/%,'\"]*$")
# Strings that pandas' apply/agg/transform dispatch to methods by name: anything that is
# not an ordinary computation is refused (to_* writers, style, eval, private names).
_DISPATCH_DENIED = re.compile(r"^(_|to_|style$|eval$|query$|pipe$|plot|hist$|boxplot$)")


class Rules:
    """Library-specific decisions, built once the libraries are imported."""

    def __init__(self) -> None:
        self.denied: dict[int, str] = {}  # id(object) -> message
        self.keep: list[Any] = []  # keep denied objects alive so their ids stay valid
        self.wrappers: dict[int, Callable[[Any], Callable[..., Any]]] = {}
        self.libraries: set[str] = set()
        self._cache: dict[tuple[int, int], frozenset[str]] = {}
        self.builtin_methods: dict[tuple[type, str], str] = {}
        self.attributes: dict[tuple[type, str], str] = {}
        # type -> check run before an item or attribute of an instance is assigned
        self.write_checks: dict[type, Callable[[Any], None]] = {}
        self.vetted: set[int] = set()  # ids of objects allowed whatever their origin
        # id(class) -> what a snippet gets instead (`_checked_class`)
        self.stand_ins: dict[int, Any] = {}
        # deferred expressions (pd.col) and the classes whose methods they may call later
        self.deferred: tuple[type, ...] = ()
        self.deferred_owners: tuple[type, ...] = ()

    @property
    def attribute_names(self) -> frozenset[str]:
        return self._names(self.attributes)

    @property
    def builtin_method_names(self) -> frozenset[str]:
        return self._names(self.builtin_methods)

    def _names(self, table: dict[tuple[type, str], str]) -> frozenset[str]:
        key = id(table), len(table)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = frozenset(name for _, name in table)
        return cached

    def deny(self, obj: Any, message: str) -> None:
        if obj is None:
            return
        self.keep.append(obj)
        self.denied[id(obj)] = message

    def vet(self, obj: Any) -> None:
        if obj is not None and id(obj) not in self.vetted:
            self.keep.append(obj)
            self.vetted.add(id(obj))

    def wrap(self, obj: Any, factory: Callable[[Any], Callable[..., Any]]) -> None:
        if obj is None:
            return
        self.keep.append(obj)
        self.wrappers[id(obj)] = factory


def _attr(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _refuser(message: str) -> Callable[..., Any]:
    def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise PolicyError(message)

    return refused


# Checkers wrap a library function; they are called with the instance first (bound
# methods are re-bound by `_bind_checker`), so positional[0] is the first real argument.


def _writer(func: Any, name: str) -> Callable[..., Any]:
    """`df.to_csv()` returns text; `df.to_csv("out.csv")` would write a file. The
    destination is the method's first parameter, whatever its name (`path_or_buf`, `buf`,
    `path_or_buffer`...). Some options are format templates (`float_format="{:.2f}"` is
    `str.format`): no string handed to a writer may walk attributes or items with them."""
    try:
        first = list(inspect.signature(func).parameters)[1]
    except (TypeError, ValueError, IndexError):  # pragma: no cover - a builtin's signature
        first = "path_or_buf"
    keywords = (first, *_PATH_KEYWORDS)

    def checked(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = (*args[:1], *_plain(args[1:])), _plain(kwargs)
        positional = args[1:]
        destinations = [kwargs.get(k) for k in keywords]
        if positional:
            destinations.append(positional[0])
        if any(d is not None and not _in_memory(d) for d in destinations):
            raise PolicyError(f"{name}() cannot write files in the sandbox: {_WRITER_HINT}.")
        _no_format_walks(name, [positional, kwargs])
        return func(*args, **kwargs)

    return checked


_SOURCE_KEYWORDS = ("filepath_or_buffer", "path_or_buf", "path", "fname", "file", "io")
_REMOTE_KEYWORDS = ("storage_options", "filesystem")


def _timeit_checker(func: Any) -> Callable[..., Any]:
    """`timeit(f, number=3)`; a string would be compiled and run as unrestricted code."""

    def checked(stmt: Any = "pass", setup: Any = "pass", *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("globals") is not None or any(
            isinstance(code, str) and code != "pass" for code in (stmt, setup)
        ):
            raise PolicyError(
                "timeit runs functions only in the sandbox: timeit(lambda: ..., number=10)."
            )
        return func(stmt, setup, *args, **kwargs)

    return checked


def _in_memory_reader(func: Any, name: str) -> Callable[..., Any]:
    """`pd.read_csv(io.StringIO(text))` parses text the snippet already has; a path, a URL
    or a file system would reach outside."""

    def checked(*args: Any, **kwargs: Any) -> Any:
        sources = [kwargs[k] for k in _SOURCE_KEYWORDS if k in kwargs]
        if args:
            sources.append(args[0])
        if len(sources) != 1 or not _in_memory(sources[0]):
            raise PolicyError(
                f"{name} reads files or URLs. {_NO_FILES} It can parse text the snippet "
                f"has: {name}(io.StringIO(text))."
            )
        if any(kwargs.get(k) is not None for k in (*_REMOTE_KEYWORDS, "stylesheet")):
            raise PolicyError(
                f"{name}: storage options, file systems and stylesheets reach outside."
            )
        return func(*args, **kwargs)

    return checked


# A replacement field whose name goes on with `.attr` or `[key]`: `{0.__class__}`. A
# position (`{0[1]}`) looks up nothing by name.
_FORMAT_WALK = re.compile(r"\{[^{}:!]*(\.|\[(?!\d+\]))")


def _no_format_walks(name: str, values: Any) -> None:
    for text in _strings_in(values):
        if _FORMAT_WALK.search(text):
            raise PolicyError(
                f"{name}(): format templates that look up attributes or items "
                f"({text[:40]!r}) are not available in the sandbox; use e.g. '{{:.2f}}'."
            )


def _expression(func: Any, name: str) -> Callable[..., Any]:
    """`df.query("age < 40")` is fine; `@name` and backticks reach outside, and pandas
    evaluates attribute reads and method calls itself (`a.to_csv('/tmp/x')`, unguarded):
    only names, constants and operators are accepted."""

    def checked(*args: Any, **kwargs: Any) -> Any:
        positional = args[1:]
        expr = positional[0] if positional else kwargs.get("expr")
        # `column name` in backticks is a column (pandas turns it into a name of its own,
        # whatever it holds); what is around the quoted names must be plain
        plain = _BACKTICKED.sub(" quarry_column ", expr) if isinstance(expr, str) else None
        if (
            plain is None
            or "@" in plain
            or "`" in plain
            or "__" in plain
            or not _SAFE_QUERY.match(plain)
            or not _plain_expression(plain)
        ):
            raise PolicyError(
                f"{name}() accepts plain column expressions only (columns, `quoted column "
                "names`, constants and operators: no @variables, attributes or calls); use "
                "boolean indexing, e.g. df[df['age'] < 40], instead."
            )
        kwargs.pop("local_dict", None)
        kwargs.pop("global_dict", None)
        kwargs.pop("resolvers", None)
        return func(*args, **kwargs)

    return checked


_EXPRESSION_NODES = (
    ast.Module,
    ast.Expr,
    ast.Assign,
    ast.Name,
    ast.Constant,
    ast.BinOp,
    ast.BoolOp,
    ast.UnaryOp,
    ast.Compare,
    ast.List,
    ast.Tuple,
    ast.expr_context,
    ast.operator,
    ast.boolop,
    ast.unaryop,
    ast.cmpop,
)


def _plain_expression(expr: str) -> bool:
    try:
        tree = ast.parse(expr.strip())
    except SyntaxError:
        return False
    return all(isinstance(node, _EXPRESSION_NODES) for node in ast.walk(tree))


def _plain(value: Any, seen: set[int] | None = None) -> Any:
    """Strings, dicts, lists and tuples as exactly those types, from what they really hold:
    a dict subclass could show a checker one thing in `values()` and hand a library another
    in `get()`, so a checker looks at, and passes on, plain copies."""
    seen = set() if seen is None else seen
    if isinstance(value, str):
        return value if type(value) is str else str.__str__(value)
    if not isinstance(value, dict | list | tuple) or id(value) in seen:
        return value
    seen.add(id(value))
    if isinstance(value, dict):
        return {k: _plain(v, seen) for k, v in dict.items(value)}
    if isinstance(value, list):
        return [_plain(v, seen) for v in list.__iter__(value)]
    return tuple(_plain(v, seen) for v in tuple.__iter__(value))


def _strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings_in(item)


def _dispatch(func: Any, name: str) -> Callable[..., Any]:
    """pandas resolves string functions by name (`df.agg("mean")`): refuse names that
    would reach writers, the styler, eval or private methods that way."""

    def checked(*args: Any, **kwargs: Any) -> Any:
        positional = args[1:]
        candidates = [*positional[:1], kwargs.get("func"), kwargs.get("arg")]
        candidates += [v for k, v in kwargs.items() if k not in {"func", "arg", "axis"}]
        for text in (s for c in candidates for s in _strings_in(c)):
            if _DISPATCH_DENIED.match(text):
                raise PolicyError(f"{name}() cannot call {text!r} by name in the sandbox.")
        return func(*args, **kwargs)

    return checked


# pandas methods that change the object they are called on (always, or with inplace=True).
_PANDAS_ALWAYS_MUTATE = frozenset({"insert", "pop", "update"})
_PANDAS_MUTATORS = _PANDAS_ALWAYS_MUTATE | frozenset(
    [
        "drop",
        "fillna",
        "ffill",
        "bfill",
        "replace",
        "rename",
        "rename_axis",
        "sort_values",
        "sort_index",
        "set_index",
        "reset_index",
        "dropna",
        "drop_duplicates",
        "interpolate",
        "clip",
        "where",
        "mask",
        "set_axis",
    ]
)


def _mutating(func: Any, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if args and (name in _PANDAS_ALWAYS_MUTATE or kwargs.get("inplace")):
            WRITTEN.add(id(args[0]))
        return func(*args, **kwargs)

    return call


# Library functions that copy attributes by name, the names given as data: with
# `assigned=("__code__",)` a snippet function would run a library function's unrestricted
# bytecode, or a library function (json.dumps, which the runner uses) the snippet's.
def _snippet_function(value: Any) -> bool:
    return isinstance(value, types.FunctionType) and (
        value.__code__.co_filename == SNIPPET_FILENAME
    )


def _copied_names(assigned: Any, updated: Any) -> None:
    if not set(assigned) <= set(functools.WRAPPER_ASSIGNMENTS) or not set(updated) <= set(
        functools.WRAPPER_UPDATES
    ):
        raise PolicyError(
            "functools.update_wrapper/wraps copy their usual attributes only in the sandbox "
            "(leave `assigned` and `updated` out)."
        )


def _update_wrapper(func: Any) -> Callable[..., Any]:
    def checked(
        wrapper: Any,
        wrapped: Any,
        assigned: Any = functools.WRAPPER_ASSIGNMENTS,
        updated: Any = functools.WRAPPER_UPDATES,
    ) -> Any:
        _copied_names(assigned, updated)
        if not _snippet_function(wrapper):
            raise PolicyError(
                "functools.update_wrapper changes the function it is given: in the sandbox, "
                "only a function the snippet defines."
            )
        return func(wrapper, wrapped, assigned, updated)

    return checked


def _wraps(func: Any) -> Callable[..., Any]:
    update = _update_wrapper(functools.update_wrapper)

    def checked(
        wrapped: Any,
        assigned: Any = functools.WRAPPER_ASSIGNMENTS,
        updated: Any = functools.WRAPPER_UPDATES,
    ) -> Any:
        _copied_names(assigned, updated)
        return functools.partial(update, wrapped=wrapped, assigned=assigned, updated=updated)

    return checked


def _total_ordering(func: Any) -> Callable[..., Any]:
    def checked(cls: Any) -> Any:
        if not (isinstance(cls, type) and cls.__module__ == "__quarry__"):
            raise PolicyError(
                "functools.total_ordering adds methods to the class it is given: in the "
                "sandbox, only a class the snippet defines."
            )
        return func(cls)

    return checked


def build_rules() -> Rules:
    rules = Rules()
    for name in (
        "open",
        "eval",
        "exec",
        "compile",
        "__import__",
        "globals",
        "locals",
        "vars",
        "input",
        "breakpoint",
        "help",
        "exit",
        "quit",
        "memoryview",
        "getattr",
        "setattr",
        "delattr",
        "dir",
    ):
        rules.deny(getattr(builtins, name, None), f"{name}() is not available in the sandbox.")
    rules.deny(string.Formatter, "string.Formatter is not available in the sandbox.")
    import zoneinfo  # its search path is the process', not the snippet's

    rules.deny(zoneinfo.reset_tzpath, "zoneinfo.reset_tzpath is not available in the sandbox.")
    import timeit

    for func in (timeit.timeit, timeit.repeat):
        rules.wrap(func, _timeit_checker)
    rules.wrap(functools.update_wrapper, _update_wrapper)
    rules.wrap(functools.wraps, _wraps)
    rules.wrap(functools.total_ordering, _total_ordering)
    rules.builtin_methods[(io.BytesIO, "getbuffer")] = (
        "BytesIO.getbuffer is not available in the sandbox (a raw view of memory); use getvalue()."
    )
    rules.deny(operator.attrgetter, "operator.attrgetter is not available in the sandbox.")
    rules.deny(operator.methodcaller, "operator.methodcaller is not available in the sandbox.")
    return rules


_NUMPY_TESTING_KEPT = frozenset({"suppress_warnings", "build_err_msg", "SkipTest"})


def _references(buffer: Any) -> bool:
    """Whether `buffer`'s memory holds object references (an object array, or a buffer
    whose format has 'O'), or is not a plain buffer at all."""
    import numpy as np

    if isinstance(buffer, bytes | bytearray):
        return False
    if isinstance(buffer, np.ndarray):
        return bool(buffer.dtype.hasobject)
    try:
        with memoryview(buffer) as view:
            return "O" in view.format
    except TypeError:
        return False  # not a buffer: numpy says so itself


_BUFFER_NAMES = ("buffer", "buf", "datastring", "obj", "x")


def _check_memory(what: str, arguments: dict[str, Any], converts_arrays: bool = False) -> None:
    """Refuse an array made over memory that holds object pointers, or before its start.
    `arguments` are the call's, by parameter name (the buffer is the first of
    `_BUFFER_NAMES` present). `converts_arrays`: given an array, the function converts it
    (a copy), and only other buffers (bytes...) are used in place."""
    import numpy as np

    buffer = next((arguments[k] for k in _BUFFER_NAMES if k in arguments), None)
    if converts_arrays and isinstance(buffer, np.ndarray):
        buffer = None
    if buffer is not None and _references(buffer):
        raise PolicyError(
            f"{what} over an array of Python objects is not available in the sandbox (it "
            "exposes their memory addresses); convert first, e.g. arr.astype(float)."
        )
    offset = arguments.get("offset")
    if isinstance(offset, int) and offset < 0:  # numpy 2.4 takes it: memory before the buffer
        raise PolicyError(f"{what} with a negative offset is not available in the sandbox.")


def _memory_call(
    func: Any,
    signature: inspect.Signature | None,
    what: str,
    args: Any,
    kwargs: Any,
    converts_arrays: bool = False,
) -> Any:
    """Check a call that makes an array over a buffer (`_check_memory`), then make it with
    exactly what was checked: the offset as a plain int (an int subclass could answer
    `offset < 0` with False and still be -8 to numpy)."""
    if signature is None:
        arguments = {"buffer": args[0] if args else None, **kwargs}
        if kwargs.get("offset") is not None:
            kwargs = {**kwargs, "offset": _plain_int(kwargs["offset"])}
            arguments["offset"] = kwargs["offset"]
        _check_memory(what, arguments, converts_arrays)
        return func(*args, **kwargs)
    try:
        bound = signature.bind_partial(*args, **kwargs)
    except TypeError:
        return func(*args, **kwargs)  # the library will say what is wrong with the call
    if bound.arguments.get("offset") is not None:
        bound.arguments["offset"] = _plain_int(bound.arguments["offset"])
    _check_memory(what, bound.arguments, converts_arrays)
    return func(*bound.args, **bound.kwargs)


def _plain_int(value: Any) -> int:
    return int.__index__(operator.index(value))  # exactly an int, asked once


def _plain_memory(func: Any, name: str, converts_arrays: bool = False) -> Callable[..., Any]:
    """A function that makes an array over a buffer it is given (np.frombuffer,
    np.ma.frombuffer, np.rec.fromstring / rec.array / char.array over bytes...)."""
    try:
        signature: inspect.Signature | None = inspect.signature(func)
    except (TypeError, ValueError):
        signature = None

    def checked(*args: Any, **kwargs: Any) -> Any:
        return _memory_call(func, signature, f"{name}()", args, kwargs, converts_arrays)

    return checked


def _checked_class(real: type, what: str, after: Callable[[Any], None] | None = None) -> type:
    """What a snippet gets for an array class that can be built over raw memory (and for
    `type(x)` of one): constructing it checks the buffer and offset (`_check_memory`), then
    builds the real class (and runs `after` on it); `isinstance`, `issubclass`, `type(a) is
    cls` and subclassing behave as with the real class."""
    meta = type(real)
    checking = threading.local()
    signature: inspect.Signature | None = None
    try:
        found = inspect.signature(real.__new__)
        if not any(p.kind is p.VAR_POSITIONAL for p in found.parameters.values()):
            # without the class itself
            signature = found.replace(parameters=list(found.parameters.values())[1:])
    except (TypeError, ValueError):
        pass
    if signature is None:
        # a C type (numpy's ndarray): its documented parameters
        signature = inspect.Signature(
            [
                inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                for n in ("shape", "dtype", "buffer", "offset", "strides", "order")
            ]
        )

    class Checked(meta):  # type: ignore[valid-type,misc]
        def __call__(cls, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - a metaclass
            if cls is not stand_in:  # a subclass the snippet made: built as Python would
                return meta.__call__(cls, *args, **kwargs)
            made = _memory_call(real, signature, what, args, kwargs)
            if after is not None:
                after(made)
            return made

        def __instancecheck__(cls, obj: Any) -> bool:  # noqa: N805
            return isinstance(obj, real) if cls is stand_in else meta.__instancecheck__(cls, obj)

        def __subclasscheck__(cls, sub: type) -> bool:  # noqa: N805
            if cls is not stand_in:
                return meta.__subclasscheck__(cls, sub)
            # An ABC (scipy's sparse classes) asks each of its subclasses, this one too,
            # while it answers: that inner question adds nothing, and must not ask again.
            if getattr(checking, "now", False):
                return False
            checking.now = True
            try:
                return issubclass(sub, real)
            finally:
                checking.now = False

    namespace: dict[str, Any] = {"__module__": real.__module__, "__qualname__": real.__qualname__}
    if (real.__module__, real.__name__) == ("numpy", "ndarray"):
        # `arr.view(np.ndarray)` makes one of these: what is computed from it is plain again
        def __array_wrap__(  # noqa: N807 - numpy's protocol
            self: Any, arr: Any, context: Any = None, return_scalar: bool = False
        ) -> Any:
            if type(self) is not stand_in:
                return real.__array_wrap__(self, arr, context, return_scalar)  # type: ignore[attr-defined]
            out = arr.view(real) if type(arr) is stand_in else arr
            return out[()] if return_scalar else out

        namespace["__array_wrap__"] = __array_wrap__
        namespace["__repr__"] = lambda self: repr(self.view(real))
    stand_in: type = Checked(real.__name__, (real,), namespace)
    return stand_in


def _numpy_rules(rules: Rules) -> None:
    import numpy as np

    for name in (
        "load",
        "save",
        "savez",
        "savez_compressed",
        "savetxt",
        "fromfile",
        "memmap",
        "DataSource",
    ):
        rules.deny(getattr(np, name, None), f"numpy.{name} touches files. {_NO_FILES}")
    rules.deny(
        _attr(np, "lib.stride_tricks.as_strided"),
        "as_strided is not available in the sandbox (it reads arbitrary memory).",
    )
    for method in ("tofile", "dump"):
        rules.deny(getattr(np.ndarray, method), f"ndarray.{method} writes files. {_NO_FILES}")
        rules.builtin_methods[(np.ndarray, method)] = f"ndarray.{method} writes files."
    rules.attributes[(np.ndarray, "ctypes")] = "ndarray.ctypes is not available in the sandbox."
    # Raw memory: an array over the memory of an object array holds its object pointers,
    # writable; with addresses (byte_bounds) they forge a view of all memory (numpy issue
    # 6811; the technique that reached the real builtins in the sandbox).
    rules.deny(
        _attr(np, "lib.array_utils.byte_bounds"),
        "byte_bounds is not available in the sandbox (it gives memory addresses).",
    )
    rules.deny(
        getattr(np, "byte_bounds", None),
        "byte_bounds is not available in the sandbox (it gives memory addresses).",
    )
    for dotted in ("frombuffer", "from_dlpack", "ma.frombuffer", "rec.fromstring"):
        rules.wrap(_attr(np, dotted), functools.partial(_plain_memory, name=f"numpy.{dotted}"))
    for dotted in ("rec.array", "char.array", "char.asarray"):  # arrays: converted, copied
        checker = functools.partial(_plain_memory, name=f"numpy.{dotted}", converts_arrays=True)
        rules.wrap(_attr(np, dotted), checker)
    for cls, what in (
        (np.ndarray, "numpy.ndarray(buffer=...)"),
        (_attr(np, "char.chararray"), "numpy.char.chararray(buffer=...)"),
        (np.recarray, "numpy.recarray(buf=...)"),
    ):
        if isinstance(cls, type):
            rules.keep.append(cls)
            rules.stand_ins[id(cls)] = _checked_class(cls, what)
    # numpy.testing: its assertions; not the helpers that run code strings (measure,
    # runstring, rundocs), start threads or test runs, or touch files and the collector
    testing = _attr(np, "testing")
    if testing is not None:
        for name in dir(testing):
            value = getattr(testing, name, None)
            keep = name.startswith("assert_") and name != "assert_no_gc_cycles"
            if callable(value) and not keep and name not in _NUMPY_TESTING_KEPT:
                rules.deny(value, f"numpy.testing.{name} is not available in the sandbox.")
    rules.deny(_attr(np, "rec.fromfile"), f"numpy.rec.fromfile reads files. {_NO_FILES}")
    for name in ("loadtxt", "genfromtxt", "fromregex"):
        rules.wrap(getattr(np, name), functools.partial(_in_memory_reader, name=f"numpy.{name}"))


def _pandas_rules(rules: Rules) -> None:
    import pandas as pd

    for name in dir(pd):
        if name in _IN_MEMORY_READERS:
            reader = functools.partial(_in_memory_reader, name=f"pandas.{name}")
            rules.wrap(getattr(pd, name), reader)
        elif name.startswith("read_"):
            rules.deny(getattr(pd, name), f"pandas.{name} reads files or URLs. {_NO_FILES}")
    for name in ("to_pickle", "eval", "HDFStore", "ExcelWriter", "ExcelFile", "read_pickle"):
        rules.deny(getattr(pd, name, None), f"pandas.{name} is not available in the sandbox.")
    # NDFrame too: `super(pd.DataFrame, df).to_excel(...)` reaches the base class' method.
    frames = [pd.DataFrame, pd.Series, pd.Index, *_classes(pd, "core.generic.NDFrame")]
    for cls in frames:
        for method in (
            "to_pickle",
            "to_hdf",
            "to_sql",
            "to_stata",
            "to_excel",
            "to_clipboard",
            "to_feather",
        ):
            rules.deny(
                getattr(cls, method, None),
                f"{method}() writes files or databases. {_NO_FILES}",
            )
        for method in (
            "to_csv",
            "to_json",
            "to_parquet",
            "to_html",
            "to_latex",
            "to_markdown",
            "to_string",
            "to_xml",
            "to_orc",
        ):
            func = getattr(cls, method, None)
            rules.wrap(func, functools.partial(_writer, name=method))
        for method in ("eval", "query"):
            rules.wrap(getattr(cls, method, None), functools.partial(_expression, name=method))
        for method in ("apply", "agg", "aggregate", "transform", "map", "applymap"):
            rules.wrap(getattr(cls, method, None), functools.partial(_dispatch, name=method))
        rules.attributes[(cls, "style")] = "The Styler is not available in the sandbox."
    for cls in (pd.DataFrame, pd.Series):
        for method in _PANDAS_MUTATORS:
            func = getattr(cls, method, None)
            if func is not None and id(func) not in rules.wrappers:
                rules.wrap(func, functools.partial(_mutating, name=method))
    for group in _groupby_classes(pd):
        for method in ("apply", "agg", "aggregate", "transform"):
            rules.wrap(getattr(group, method, None), functools.partial(_dispatch, name=method))
    # Deferred expressions call what they are given by name later, unguarded
    # (`pd.col("a").to_csv(path)`): each name is checked when the expression is built
    # (`Guard.deferred`). Accessor registration changes pandas' own classes.
    expression = _attr(pd, "api.typing.Expression")
    if isinstance(expression, type):
        rules.deferred = (expression,)
        rules.deferred_owners = tuple(
            owner
            for owner in (pd.Series, *(getattr(pd.Series, a, None) for a in _ACCESSORS))
            if isinstance(owner, type)
        )
    rules.vet(getattr(pd, "json_normalize", None))  # pure, though it lives in pandas.io
    # what the in-memory readers return when asked for chunks: reads from that memory
    for chunked in _classes(pd, "api.typing.JsonReader", "io.parsers.TextFileReader"):
        for method in ("read", "close", "get_chunk", "__next__", "__iter__"):
            rules.vet(vars(chunked).get(method))
    for name in (
        "register_dataframe_accessor",
        "register_series_accessor",
        "register_index_accessor",
        "register_extension_dtype",
    ):
        rules.deny(
            _attr(pd, f"api.extensions.{name}"),
            f"{name} is not available in the sandbox (it changes pandas' classes).",
        )
    # Options: display ones only (`plotting.backend` imports any module it names,
    # `styler.format.formatter` is a format template).
    rules.wrap(pd.set_option, lambda f: _options(f, "set_option"))
    rules.wrap(pd.option_context, lambda f: _options(f, "option_context"))
    rules.write_checks[type(pd.options)] = _options_write


# Readers of text formats, given an in-memory file (`_in_memory_reader`).
_IN_MEMORY_READERS = frozenset(
    {"read_csv", "read_table", "read_fwf", "read_json", "read_parquet", "read_xml"}
)
_ACCESSORS = ("str", "dt", "cat")
_OPTION_PREFIXES = ("display.", "mode.", "future.")


def _option_key(pattern: Any) -> str:
    from pandas._config import config

    try:
        return str(config._get_single_key(pattern))  # type: ignore[attr-defined]
    except Exception:  # no such option: pandas says so when it is set
        return str(pattern)


def _options_refused(key: str) -> PolicyError:
    return PolicyError(
        f"The pandas option {key!r} cannot be set in the sandbox (only display options can)."
    )


def _options(func: Any, name: str) -> Callable[..., Any]:
    def checked(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = _plain(args), _plain(kwargs)
        keys = list(args[0]) if len(args) == 1 and isinstance(args[0], dict) else args[0::2]
        for pattern in keys:
            key = _option_key(pattern)
            if not key.startswith(_OPTION_PREFIXES):
                raise _options_refused(key)
        _no_format_walks(name, [args, kwargs])
        return func(*args, **kwargs)

    return checked


def _options_write(options: Any) -> None:
    """`pd.options.display.max_rows = 5` is fine; `pd.options.plotting.backend = ...` not."""
    prefix = object.__getattribute__(options, "prefix")
    if not (prefix + ".").startswith(_OPTION_PREFIXES):
        raise _options_refused(prefix or "pd.options")


def _classes(pd: Any, *dotted: str) -> list[type]:
    return [cls for cls in (_attr(pd, name) for name in dotted) if isinstance(cls, type)]


def _groupby_classes(pd: Any) -> list[type]:
    return _classes(
        pd,
        "core.groupby.DataFrameGroupBy",
        "core.groupby.SeriesGroupBy",
        "core.resample.Resampler",
        "core.window.rolling.Rolling",
        "core.window.expanding.Expanding",
    )


def _plotly_rules(rules: Rules) -> None:
    from plotly.basedatatypes import BaseFigure

    for method in ("write_html", "write_image", "write_json", "show", "to_image"):
        rules.deny(
            getattr(BaseFigure, method, None),
            f"fig.{method}() is not available: figures are captured automatically, leave "
            "the figure as the last expression or in a variable.",
        )


def _sklearn_rules(rules: Rules) -> None:
    import sklearn.datasets as datasets
    import sklearn.tree as tree

    for name in dir(datasets):
        if name.startswith(("fetch_", "load_svmlight", "dump_svmlight")) or name in {
            "get_data_home",
            "clear_data_home",
            "load_files",
        }:
            rules.deny(
                getattr(datasets, name),
                f"sklearn.datasets.{name} reads files or the network. {_NO_FILES}",
            )
    rules.wrap(getattr(tree, "export_graphviz", None), _graphviz_checker)


def _graphviz_checker(func: Any) -> Callable[..., Any]:
    def checked(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("out_file") is not None or len(args) > 1:
            raise PolicyError("export_graphviz cannot write files: pass out_file=None.")
        return func(*args, out_file=None, **kwargs)

    return checked


def _scipy_rules(rules: Rules) -> None:
    import scipy

    rules.deny(getattr(scipy, "LowLevelCallable", None), "LowLevelCallable is not available.")


def _scipy_qmc_rules(rules: Rules) -> None:
    """The quasi-Monte Carlo engines are pure; their constructors carry a decorator from
    scipy._lib, which the origin check would refuse."""
    from scipy.stats import qmc

    for name in dir(qmc):
        value = getattr(qmc, name)
        if isinstance(value, type) and not name.startswith("_"):
            rules.vet(value)


def _scipy_sparse_rules(rules: Rules) -> None:
    """Compressed sparse matrices built from (data, indices, indptr) are checked only
    loosely by scipy: an index past the end (or negative) reads and writes outside the
    arrays (scipy issue 8778). A snippet's sparse classes check every index."""
    import scipy.sparse as sparse

    def full_check(matrix: Any) -> None:
        try:
            matrix.check_format(full_check=True)
        except ValueError as exc:
            raise PolicyError(f"This sparse matrix's indices are out of range: {exc}") from None

    for name in ("issparse", "isspmatrix"):  # pure, though they live in scipy._lib
        rules.vet(getattr(sparse, name, None))
    for name in ("csr_matrix", "csc_matrix", "bsr_matrix", "csr_array", "csc_array", "bsr_array"):
        cls = getattr(sparse, name, None)
        if isinstance(cls, type):
            rules.keep.append(cls)
            rules.stand_ins[id(cls)] = _checked_class(cls, f"scipy.sparse.{name}", full_check)


def _scipy_odr_rules(rules: Rules) -> None:
    """ODRPACK writes its report and error files from Fortran (no audit event sees it)."""
    import scipy.odr

    rules.wrap(_attr(scipy.odr, "ODR.run"), _odr_checker)
    rules.wrap(_attr(scipy.odr, "ODR.restart"), _odr_checker)
    rules.wrap(getattr(scipy.odr, "odr", None), _odr_function_checker)


def _odr_function_checker(func: Any) -> Callable[..., Any]:
    """`scipy.odr.odr(fcn, beta0, y, x, ..., errfile, rptfile, ...)`: positions 13 and 14."""

    def checked(*args: Any, **kwargs: Any) -> Any:
        named = [kwargs.get("errfile"), kwargs.get("rptfile"), *args[13:15]]
        if any(value is not None for value in named):
            raise PolicyError(f"odr() cannot write report files (rptfile, errfile). {_NO_FILES}")
        return func(*args, **kwargs)

    return checked


def _odr_checker(func: Any) -> Callable[..., Any]:
    def checked(odr: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(odr, "rptfile", None) is not None or getattr(odr, "errfile", None) is not None:
            raise PolicyError(f"ODR cannot write report files (rptfile, errfile). {_NO_FILES}")
        return func(odr, *args, **kwargs)

    return checked


# Library rules are built when the library is first imported in the process (by the
# snippet, or by the runner loading a dataset): a snippet that only does arithmetic does
# not pay for importing scikit-learn.
_LIBRARY_RULES = {
    "numpy": _numpy_rules,
    "pandas": _pandas_rules,
    "plotly": _plotly_rules,
    "sklearn": _sklearn_rules,
    "scipy": _scipy_rules,
    "scipy.odr": _scipy_odr_rules,
    "scipy.sparse": _scipy_sparse_rules,
    "scipy.stats.qmc": _scipy_qmc_rules,
}


# --- the audit hook: what a snippet's call stack may do, whichever library it goes through ------

# Whatever library function a snippet calls, what it makes happen in the process is
# checked here: Python raises an audit event for every file opened, directory listed,
# socket made, process started, pickle global resolved... (PEP 578). While code compiled
# from the snippet is on the stack, those that reach outside the sandbox are refused; the
# libraries' own imports (reading their files) stay allowed. Native code that does I/O
# without Python (pyarrow's file system, Fortran) is not seen here: the library rules
# above refuse its entry points.
SNIPPET_FILENAME = "<snippet>"
_BLOCKED_EVENTS = frozenset(
    {
        "builtins.input",
        "builtins.breakpoint",
        "code.__new__",
        "function.__new__",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "pickle.find_class",
        "marshal.load",
        "sys.addaudithook",
        "sys.settrace",
        "sys.setprofile",
        "sys._current_frames",
        "sys._current_exceptions",
        "ctypes.addressof",
        "ctypes.cdata",
        "ctypes.cdata/buffer",
        "ctypes.string_at",
        "ctypes.wstring_at",
        "ctypes.set_errno",
        "ctypes.set_exception",
        "os.system",
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.spawn",
        "os.exec",
        "os.kill",
        "os.killpg",
        "os.chdir",
        "os.chmod",
        "os.chown",
        "os.chflags",
        "os.lchflags",
        "os.link",
        "os.symlink",
        "os.mkdir",
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.truncate",
        "os.utime",
        "os.setxattr",
        "os.removexattr",
        "os.startfile",
        "os.add_dll_directory",
        "resource.setrlimit",
        "resource.prlimit",
        "signal.pthread_kill",
    }
)
# Whole families: sockets, URLs, processes, temporary files...
_BLOCKED_FAMILIES = frozenset(
    {
        "socket",
        "subprocess",
        "_posixsubprocess",
        "multiprocessing",
        "pty",
        "webbrowser",
        "urllib",
        "http",
        "ftplib",
        "smtplib",
        "poplib",
        "imaplib",
        "nntplib",
        "telnetlib",
        "ssl",
        "shutil",
        "tempfile",
        "glob",
        "sqlite3",
        "syslog",
        "fcntl",
        "msvcrt",
        "winreg",
        "_winapi",
        "cpython",
    }
)
# Events about a path: allowed only to read the interpreter's and the libraries' files.
_PATH_EVENTS = frozenset({"open", "os.listdir", "os.scandir", "os.getxattr", "os.listxattr"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_decisions: dict[str, str] = {}  # event -> "block" | "path" | "dlopen" | ""


class SandboxRefusal(PolicyError, PermissionError):
    """An effect outside the sandbox, refused while the snippet runs. Also a
    PermissionError, so that a library that handles a refused file carries on as it
    would with an unreadable one."""


# Read by the libraries to size themselves (joblib reads the CPU quota, threadpoolctl the
# loaded libraries, pandas the time zones); nothing secret, and absent inside the process
# sandbox (not in a container).
_SYSTEM_FACTS = ("/usr/share/zoneinfo", "/sys/fs/cgroup", "/sys/devices/system/cpu")
_SYSTEM_FILES = frozenset({"/proc/self/maps", "/proc/cpuinfo", "/proc/meminfo", "/etc/localtime"})


def library_roots() -> tuple[str, ...]:
    """Directories a snippet's libraries may read from: the interpreter's prefixes and
    the installed packages (never the working directory, the worker's source or data)."""
    paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, *_SYSTEM_FACTS}
    paths.update(p for p in sys.path if "site-packages" in p or "dist-packages" in p)
    return tuple(sorted({os.path.realpath(p) + os.sep for p in paths if p}))


# Shared libraries may also be loaded from the system's library directories.
_LIBRARY_DIRS = ("/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/", "/usr/local/lib/")
_roots: tuple[str, ...] = ()


_job_threads: list[int] = []  # the thread a sandbox's job runs on, once `one_job()` said so


def one_job() -> None:
    """This process runs one snippet from now on (a sandbox child, `python -m runner`):
    any other Python thread is the snippet's. Nothing in the runner or its libraries starts
    one during a job, so a thread can only come from code that got past the language layer
    (`_thread.start_new_thread(os.system, ...)` runs no snippet frame), and what it does is
    judged as the snippet's own."""
    _job_threads[:] = [threading.get_ident()]


def _on_snippet_stack() -> bool:
    if _job_threads and threading.get_ident() != _job_threads[0]:
        return True
    frame: types.FrameType | None = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename == SNIPPET_FILENAME:
            return True
        frame = frame.f_back
    return False


def _readable(path: Any, roots: tuple[str, ...], files: frozenset[str] = frozenset()) -> bool:
    """Whether `path` (a name, not a descriptor) is under one of `roots` or is one of
    `files`, once `..` and symbolic links are resolved."""
    if isinstance(path, int) or path is None:
        return False
    try:
        # an exact str: a subclass could answer startswith() or == as it likes
        text = str.__str__(os.fsdecode(os.fspath(path)))
    except TypeError:
        return False
    if os.path.abspath(text) in files:
        return True
    return (os.path.realpath(text) + os.sep).startswith(roots)


def _decide(event: str) -> str:
    decision = _decisions.get(event)
    if decision is None:
        if event in _BLOCKED_EVENTS or event.split(".", 1)[0] in _BLOCKED_FAMILIES:
            decision = "block"
        elif event in _PATH_EVENTS:
            decision = "path"
        elif event == "ctypes.dlopen":
            decision = "dlopen"
        else:
            decision = ""
        _decisions[event] = decision
    return decision


def _audit(event: str, args: tuple[Any, ...]) -> None:
    decision = _decisions.get(event)
    if decision == "":
        return
    if decision is None:
        decision = _decide(event)
        if not decision:
            return
    if not _on_snippet_stack():
        return
    if decision == "block":
        raise SandboxRefusal(
            f"{_EVENT_WORDS.get(event.split('.', 1)[0], event)} is not available "
            f"in the sandbox ({event}). {_NO_FILES}"
        )
    path = args[0] if args else None
    if decision == "dlopen":
        # A bare name (or None, the program itself) is looked up by the loader in the
        # system's directories; a path must be one of the installed libraries.
        if path is None or (isinstance(path, str) and "/" not in path):
            return
        if not _readable(path, _roots + _LIBRARY_DIRS):
            raise SandboxRefusal(
                f"Loading native code from {path!r} is not available in the sandbox. {_NO_FILES}"
            )
        return
    if event == "open":
        mode = args[1] if len(args) > 1 else None
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or flags & _WRITE_FLAGS
        if not writing and _readable(path, _roots, _SYSTEM_FILES):
            return
        what = "Writing files" if writing else "Reading files"
    else:
        if _readable(path, _roots):
            return
        what = "Listing directories"
    shown = path if isinstance(path, str | bytes | int) else type(path).__name__
    raise SandboxRefusal(f"{what} is not available in the sandbox ({shown!r}). {_NO_FILES}")


_EVENT_WORDS = {
    "open": "Opening files",
    "socket": "The network",
    "urllib": "The network",
    "http": "The network",
    "subprocess": "Starting processes",
    "multiprocessing": "Starting processes",
    "_posixsubprocess": "Starting processes",
    "os": "This operating system call",
    "pickle": "Unpickling",
    "marshal": "Loading marshalled code",
    "ctypes": "Raw memory access",
    "gc": "The garbage collector's object lists",
    "sys": "Changing the interpreter",
    "shutil": "Changing files",
    "tempfile": "Temporary files",
    "resource": "Changing resource limits",
}

_hook_installed = False


def install_audit_hook() -> None:
    """Once per process (audit hooks cannot be removed; they only act while snippet code
    is on the stack)."""
    global _hook_installed, _roots
    if _hook_installed:
        return
    _roots = library_roots()
    _audit_spawns()
    sys.addaudithook(_audit)
    _hook_installed = True


def _audit_spawns() -> None:
    """multiprocessing starts its helpers (resource tracker, fork server, spawned workers)
    through `_posixsubprocess` directly, which raises no audit event: make it raise one;
    and its pools and queues start with a semaphore: refuse them there, before anything
    is started (scipy's `workers=2`)."""
    try:
        import multiprocessing.synchronize as synchronize
        import multiprocessing.util as util
    except ImportError:  # pragma: no cover - no multiprocessing on this platform: nothing to do
        return

    spawn = util.spawnv_passfds

    def spawnv_passfds(path: Any, args: Any, passfds: Any) -> Any:
        sys.audit("os.posix_spawn", path, args, None)
        return spawn(path, args, passfds)

    util.spawnv_passfds = spawnv_passfds
    init = synchronize.SemLock.__init__

    def semlock_init(self: Any, *args: Any, **kwargs: Any) -> None:
        sys.audit("multiprocessing.SemLock", *args)
        init(self, *args, **kwargs)

    synchronize.SemLock.__init__ = semlock_init  # type: ignore[method-assign]


# --- the guard --------------------------------------------------------------------------------


class Guard:
    def __init__(self) -> None:
        self.rules: Rules | None = None
        self.modules_seen = 0
        self.origins: dict[int, tuple[Any, str | None]] = {}

    def ready(self) -> Rules:
        rules = self.rules
        if rules is None:
            rules = self.rules = build_rules()
            install_audit_hook()
        if len(rules.libraries) < len(_LIBRARY_RULES):
            modules = sys.modules
            for name, load in _LIBRARY_RULES.items():
                if name not in rules.libraries and name in modules:
                    rules.libraries.add(name)
                    load(rules)
        if len(sys.modules) != self.modules_seen:
            self.modules_seen = len(sys.modules)
            close_item_attributes()
        return rules

    def check_name(self, obj: Any, name: str) -> None:
        if type(name) is not str:
            raise TypeError("attribute name must be a string")
        if name.startswith("_"):
            if private.private_name(name):
                message = private.refusal(obj, name)
                if message:
                    raise AttributeError(message)
                return
            if name not in _ALLOWED_DUNDER_ATTRIBUTES:
                raise AttributeError(
                    f'"{name}" is not available in the sandbox (names starting with "_" '
                    "are private)."
                )
        if name in _ESCAPE_ATTRIBUTES:
            raise AttributeError(f'"{name}" is not available in the sandbox.')
        if name in ("format", "format_map"):
            _check_template(obj)

    def getattr(self, obj: Any, name: str, *default: Any) -> Any:
        obj = unwrap_module(obj)
        self.check_name(obj, name)
        if isinstance(obj, types.ModuleType) and obj.__name__ in PARTIAL_MODULES:
            return self.partial(obj, name)
        if isinstance(obj, types.ModuleType) and not module_allowed(obj.__name__):
            # a module a library function returned (never handed out by the guard)
            raise PolicyError(f"Module '{obj.__name__}' is not available in the sandbox.")
        rules = self.ready()
        if rules.deferred and isinstance(obj, rules.deferred):
            self.deferred(rules, name)
        if name in rules.attribute_names:
            for cls in type(obj).__mro__:
                message = rules.attributes.get((cls, name))
                if message:
                    raise PolicyError(message)
        try:
            value = getattr(obj, name)
        except AttributeError:
            if default:
                return default[0]
            raise
        if isinstance(value, types.ModuleType) and isinstance(obj, types.ModuleType):
            submodule = _partial_submodule(obj, name)
            if submodule is not None:
                return submodule  # `import plotly.io as pio` reads `io` off plotly
        return self.value(value, name)

    def partial(self, module: types.ModuleType, name: str) -> Any:
        """A name of a module the snippet gets only part of (`PARTIAL_MODULES`)."""
        names = PARTIAL_MODULES[module.__name__]
        submodule = _partial_submodule(module, name)
        if submodule is not None:
            return submodule  # `import pyarrow.compute as pc`
        if name not in names:
            raise PolicyError(
                f"{module.__name__}.{name} is not available in the sandbox; of "
                f"{module.__name__}, only {', '.join(sorted(names))}."
            )
        value = getattr(module, name)
        self.ready().vet(value)  # held in a list or passed around later: still allowed
        return self.value(value, name)  # a checked stand-in where there is one

    def deferred(self, rules: Rules, name: str) -> None:
        """`pd.col("a").<name>`: pandas calls `<name>` on the column later, outside the
        guard, so the name must be a method a snippet could call itself, unchecked:
        not refused, not one whose arguments the policy checks (writers, `apply`...)."""
        if name in _ACCESSORS:
            return
        for owner in rules.deferred_owners:
            if inspect.getattr_static(owner, name, None) is None:
                continue
            member = getattr(owner, name)
            if id(member) in rules.wrappers or id(member) in rules.denied:
                break
            self.value(member, name)
            return
        raise PolicyError(
            f"pd.col(...).{name} is not available in a deferred expression in the sandbox; "
            f"call it on the column itself, e.g. df['column'].{name}(...)."
        )

    def value(self, value: Any, name: str = "") -> Any:
        """Decide what user code may hold: the value, a guarded stand-in, or nothing."""
        if isinstance(value, types.ModuleType):
            if module_allowed(value.__name__):
                return ModuleProxy(value)
            raise PolicyError(f"Module '{value.__name__}' is not available in the sandbox.")
        if type(value) is ModuleProxy:
            return value
        rules = self.ready()
        message = rules.denied.get(id(value))
        if message:
            raise PolicyError(message)
        stand_in = rules.stand_ins.get(id(value))
        if stand_in is not None:
            return stand_in
        if isinstance(value, memoryview):  # `ndarray.data`: a raw view of any buffer
            raise PolicyError(
                "Raw buffers (memoryview, ndarray.data) are not available in the sandbox; "
                "use the array itself."
            )
        target = value.__func__ if isinstance(value, types.MethodType) else None
        if target is not None:
            message = rules.denied.get(id(target))
            if message:
                raise PolicyError(message)
            factory = rules.wrappers.get(id(target))
            if factory is not None:
                return _bind_checker(factory, target, value)
        factory = rules.wrappers.get(id(value))
        if factory is not None:
            return factory(value)
        owner = getattr(value, "__self__", None)
        if (
            owner is not None
            and isinstance(value, types.BuiltinMethodType)
            and value.__name__ in rules.builtin_method_names
        ):
            for cls in type(owner).__mro__:
                message = rules.builtin_methods.get((cls, value.__name__))
                if message:
                    raise PolicyError(message)
        if isinstance(value, type) and issubclass(value, type):
            raise PolicyError(
                "Metaclasses are not available in the sandbox (they make classes from "
                "strings and dicts); define classes with a class statement."
            )
        vetted = id(value) in rules.vetted or (target is not None and id(target) in rules.vetted)
        if (callable(value) or isinstance(value, type)) and not vetted:
            module = self.foreign_origin(value)
            if module is not None:
                what = getattr(value, "__qualname__", None) if isinstance(value, type) else None
                raise PolicyError(
                    f"{what or name or 'This object'} (from {module}) is not available in the "
                    f"sandbox. {_NO_FILES}"
                )
            if isinstance(value, functools.partial):
                self.value(value.func, name)
        return value

    def foreign_origin(self, value: Any) -> str | None:
        """The first module `value` comes from that is not allowed, or None."""
        if isinstance(value, types.MethodType):
            value = value.__func__
        if isinstance(value, types.BuiltinFunctionType):
            owner = value.__self__
            if owner is not None and not isinstance(owner, types.ModuleType):
                if isinstance(owner, _MEMORY_FILES):  # BytesIO.getbuffer: refused by name
                    return None
                module = type(owner).__module__  # a method of an object: its class decides
                return None if origin_allowed(module) else module
        key = id(value)
        cached = self.origins.get(key)
        if cached is not None and cached[0] is value:
            return cached[1]
        found = None
        for module in _origins(value):
            if isinstance(module, str) and not origin_allowed(module):
                found = module
                break
        self.origins[key] = (value, found)
        return found

    def getitem(self, obj: Any, key: Any) -> Any:
        return self.value(obj[key])

    def iterate(self, obj: Any) -> Iterator[Any]:
        if type(obj) is ModuleProxy:
            raise TypeError("modules are not iterable")
        guard = self.value
        for item in obj:
            yield guard(item)


def _origins(value: Any) -> Iterator[Any]:
    """The modules a function or class comes from: the `__module__` it shows, and the
    module whose globals it runs with (that of the innermost function, under decorators)."""
    if isinstance(value, types.FunctionType):
        yield value.__module__
        inner = value
        for _ in range(32):
            wrapped = inner.__dict__.get("__wrapped__")
            if not isinstance(wrapped, types.FunctionType):
                break
            inner = wrapped
        yield inner.__module__
        yield inner.__globals__.get("__name__")
    elif isinstance(value, types.BuiltinFunctionType):
        yield value.__module__
        if isinstance(value.__self__, types.ModuleType):
            yield value.__self__.__name__
    elif isinstance(value, type):
        yield value.__module__
        for item in vars(value).values():
            func = item.__func__ if isinstance(item, staticmethod | classmethod) else item
            if isinstance(func, types.FunctionType):
                yield func.__globals__.get("__name__")
                break
    else:  # a callable object: what it says, else its class
        try:
            module = value.__module__
        except Exception:
            module = None
        yield module if isinstance(module, str) else type(value).__module__


# Classes of the allowed libraries that answer attribute reads with their items (a Series
# with its labels, scikit-learn's Bunch, scipy's OptimizeResult, pandas' options). numpy
# asks objects for `__array_interface__` by attribute: one such item holding a dict with a
# raw address would read or write any memory. Dunder names never reach the items.
_CLOSED = "quarry_closed"


def close_item_attributes() -> None:
    """Close the classes of every library module loaded since the last call."""
    for name, module in list(sys.modules.items()):
        if name in _scanned:
            continue
        _scanned.add(name)
        if name.split(".", 1)[0] not in _ITEM_ATTRIBUTE_PACKAGES or module is None:
            continue
        for cls in list(vars(module).values()):
            # (a library may say a class lives in its public module: `pandas.api.typing`)
            if not isinstance(cls, type) or not _same_package(cls.__module__, name):
                continue
            original = cls.__dict__.get("__getattr__")
            if isinstance(original, types.FunctionType) and not getattr(original, _CLOSED, False):
                _close(cls, original)


_ITEM_ATTRIBUTE_PACKAGES = ALLOWED_MODULES | {"_plotly_utils"}


def _same_package(module: Any, name: str) -> bool:
    return isinstance(module, str) and module.split(".", 1)[0] == name.split(".", 1)[0]


_scanned: set[str] = set()


def _close(cls: type, original: Callable[[Any, str], Any]) -> None:
    def __getattr__(self: Any, name: str) -> Any:  # noqa: N807 (the special method itself)
        if name[:2] == "__" and name[-2:] == "__":
            raise AttributeError(name)
        return original(self, name)

    setattr(__getattr__, _CLOSED, True)
    __getattr__.__wrapped__ = original  # type: ignore[attr-defined]
    with contextlib.suppress(TypeError):  # a class that cannot be changed stays as it is
        cls.__getattr__ = __getattr__  # type: ignore[attr-defined]


GUARD = Guard()


def _bind_checker(factory: Callable[[Any], Callable[..., Any]], func: Any, bound: Any) -> Any:
    owner = bound.__self__
    checked = factory(func)

    def call(*args: Any, **kwargs: Any) -> Any:
        return checked(owner, *args, **kwargs)

    call.__name__ = getattr(func, "__name__", "method")
    call.__doc__ = getattr(func, "__doc__", None)
    return call


# --- writes, in-place operators, imports --------------------------------------------------------

_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd,
    "-=": operator.isub,
    "*=": operator.imul,
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    "**=": operator.ipow,
    "<<=": operator.ilshift,
    ">>=": operator.irshift,
    "&=": operator.iand,
    "^=": operator.ixor,
    "|=": operator.ior,
    "@=": operator.imatmul,
}


# Objects the snippet changed in place (`df["z"] = ...`, `df.fillna(0, inplace=True)`):
# the runner keeps a changed dataset or workspace frame without hashing every loaded one.
WRITTEN: set[int] = set()


def guarded_write(obj: Any) -> Any:
    """The target of an assignment to an item or attribute. Data (DataFrames, arrays,
    dicts, lists, instances of the snippet's own classes) may change; modules, classes and
    functions may not (changing a library from inside would disarm its guards)."""
    WRITTEN.add(id(obj))
    if type(obj).__module__ == "pandas.core.indexing":  # df.loc[...] = ...: df changes
        WRITTEN.add(id(getattr(obj, "obj", None)))
    if type(obj) is ModuleProxy or isinstance(
        obj, type | types.ModuleType | types.FunctionType | types.BuiltinFunctionType
    ):
        return _ReadOnly(obj)
    rules = GUARD.rules
    if rules is not None and rules.write_checks:
        check = rules.write_checks.get(type(obj))
        if check is not None:
            check(obj)
    return obj


class _ReadOnly:
    __slots__ = ("_quarry_target",)

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_quarry_target", target)

    def __setattr__(self, name: str, value: Any) -> None:
        raise PolicyError("Classes, functions and modules cannot be changed in the sandbox.")

    __delattr__ = __setattr__  # type: ignore[assignment]

    def __setitem__(self, key: Any, value: Any) -> None:
        raise PolicyError("Classes, functions and modules cannot be changed in the sandbox.")

    __delitem__ = __setitem__


class _PrivateTarget:
    """`obj._x = v` in a snippet: the write goes through the guard, which knows whose the
    name is (`runner/private.py`)."""

    __slots__ = ("_quarry_target",)

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_quarry_target", target)

    def __setattr__(self, name: str, value: Any) -> None:
        guarded_setattr(object.__getattribute__(self, "_quarry_target"), name, value)

    def __delattr__(self, name: str) -> None:
        guarded_delattr(object.__getattribute__(self, "_quarry_target"), name)


def inplace_var(op: str, target: Any, value: Any) -> Any:
    return _INPLACE[op](target, value)


def inplace_item(obj: Any, key: Any, op: str, value: Any) -> None:
    obj[key] = _INPLACE[op](GUARD.getitem(obj, key), value)


def inplace_attr(obj: Any, name: str, op: str, value: Any) -> None:
    GUARD.check_name(obj, name)
    setattr(obj, name, _INPLACE[op](GUARD.getattr(obj, name), value))


def guarded_setattr(obj: Any, name: str, value: Any) -> None:
    GUARD.check_name(obj, name)
    setattr(guarded_write(obj), name, value)


def guarded_delattr(obj: Any, name: str) -> None:
    GUARD.check_name(obj, name)
    delattr(guarded_write(obj), name)


# Called with each module name the snippet imports (the runner hooks plotly figures).
IMPORT_HOOKS: list[Callable[[str], None]] = []


def guarded_import(
    name: str,
    globals: Any = None,
    locals: Any = None,
    fromlist: Iterable[str] | None = (),
    level: int = 0,
) -> Any:
    if level != 0:
        raise ImportError("Relative imports are not available in the sandbox.")
    if isinstance(fromlist, list):
        # A library's C code importing on the snippet's frame (`PyImport_Import`: numpy
        # loads numpy._core._dtype to print a dtype) passes a list; a snippet's `import`
        # statement passes a tuple or None. The module is not handed back.
        importlib.import_module(name)
        return None
    if not module_importable(name) and name not in PARTIAL_MODULES:
        allowed = ", ".join(sorted(ALLOWED_MODULES))
        raise ImportError(f"Module '{name}' is not available in the sandbox. Allowed: {allowed}.")
    try:
        module = importlib.import_module(name)
    except ImportError:
        raise ImportError(f"Module '{name}' is not installed in the sandbox.") from None
    for item in fromlist or ():
        # `from sklearn import datasets` before anything loaded it: import the submodule,
        # as Python's own import would (if the snippet may import it).
        if not hasattr(module, item) and module_importable(f"{name}.{item}"):
            with contextlib.suppress(ImportError):
                importlib.import_module(f"{name}.{item}")
    for hook in IMPORT_HOOKS:
        hook(name)
    if fromlist:
        return ModuleProxy(module)
    return ModuleProxy(importlib.import_module(name.split(".", 1)[0]))


def apply(func: Any, /, *args: Any, **kwargs: Any) -> Any:
    """`f(*args, **kwargs)` in a snippet. Keyword names must be plain strings: a `str`
    subclass with its own `__eq__` would match a parameter (`path_or_buf`) that a checker
    looking the name up in the dict does not see."""
    for key in kwargs:
        if type(key) is not str:
            raise PolicyError("Keyword argument names must be plain strings in the sandbox.")
    return func(*args, **kwargs)


def safe_type(obj: Any, *args: Any) -> Any:
    if args:
        raise PolicyError("type() with three arguments is not available; use a class statement.")
    return GUARD.value(type(obj))  # `type(type(x))` would be `type` itself


def guarded_getattr(obj: Any, name: str, *default: Any) -> Any:
    return GUARD.getattr(obj, name, *default)


def guarded_getiter(obj: Any) -> Iterator[Any]:
    return GUARD.iterate(obj)


def guarded_getitem(obj: Any, key: Any) -> Any:
    return GUARD.getitem(obj, key)


def guarded_hasattr(obj: Any, name: str) -> bool:
    try:
        GUARD.getattr(obj, name)
    except (AttributeError, PolicyError):
        return False
    return True


# Builtins a snippet does not get, each with what to say when one is named (not a bare
# NameError: the model reads the message and should learn what to do instead).
REFUSED_BUILTINS = {
    **{
        name: f"{name}() is not available in the sandbox."
        for name in (
            "memoryview",
            "globals",
            "locals",
            "vars",
            "dir",
            "help",
            "input",
            "compile",
            "exit",
            "quit",
            "copyright",
            "credits",
            "license",
            "aiter",
            "anext",
        )
    },
    "open": f"open() is not available in the sandbox. {_NO_FILES}",
}


def make_builtins(extra: dict[str, Any]) -> dict[str, Any]:
    """The builtins a snippet sees: RestrictedPython's safe set, the usual pure functions
    and containers, and Quarry's guarded stand-ins; nothing that reaches files, the
    interpreter or memory addresses."""
    names = dict(safe_builtins)
    for name in (
        "all",
        "any",
        "bin",
        "bytearray",
        "bytes",
        "dict",
        "enumerate",
        "filter",
        "format",
        "frozenset",
        "iter",
        "list",
        "map",
        "max",
        "min",
        "next",
        "object",
        "property",
        "reversed",
        "set",
        "sorted",
        "staticmethod",
        "classmethod",
        "sum",
        "super",
        "tuple",
        "zip",
        "StopIteration",
        "NotImplemented",
    ):
        names[name] = getattr(builtins, name)
    names["id"] = builtins.id
    for name in ("memoryview", "open", "compile", "eval", "exec"):
        names.pop(name, None)
    names.update(
        __import__=guarded_import,
        __name__="__quarry__",
        __metaclass__=type,
        __build_class__=private.build_class,
        _getattr_=guarded_getattr,
        _getitem_=guarded_getitem,
        _getiter_=guarded_getiter,
        _write_=guarded_write,
        _write_private_=_PrivateTarget,
        _inplacevar_=inplace_var,
        _inplace_item_=inplace_item,
        _inplace_attr_=inplace_attr,
        _iter_unpack_sequence_=guarded_iter_unpack_sequence,
        _unpack_sequence_=guarded_unpack_sequence,
        _apply_=apply,
        getattr=guarded_getattr,
        setattr=guarded_setattr,
        delattr=guarded_delattr,
        hasattr=guarded_hasattr,
        type=safe_type,
    )
    names.update(extra)
    return names


# --- compiling --------------------------------------------------------------------------------


class QuarryTransformer(RestrictingNodeTransformer):
    """RestrictedPython's transformer, plus what analysis code needs: augmented assignment
    to items and attributes (`counts[k] += 1`, `df["x"] *= 2`, `self.n += 1`) and
    `super().__init__(...)` / `__name__`; minus function annotations."""

    def visit_FunctionDef(self, node: ast.FunctionDef) -> Any:  # noqa: N802 (ast visitor name)
        # Annotations are dropped: typing evaluates string annotations with a plain eval
        # (`functools.singledispatch(...).register(f)` runs `def f(x: "().__class__...")`
        # unguarded). In a snippet they document; nothing needs them at run time.
        node.returns = None
        arguments = node.args
        for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
            arg.annotation = None
        for extra in (arguments.vararg, arguments.kwarg):
            if extra is not None:
                extra.annotation = None
        return super().visit_FunctionDef(node)

    def check_name(self, node: Any, name: str | None, allow_magic_methods: bool = False) -> None:
        """Names with one leading underscore are the snippet's own (`runner/private.py`);
        a method of a class may also be one of the usual protocol methods."""
        if name is not None and (
            private.private_name(name)
            or (
                allow_magic_methods
                and name in private.PROTOCOL_METHODS
                and getattr(node, "col_offset", 0) != 0
            )
        ):
            return
        super().check_name(node, name, allow_magic_methods)

    def visit_Attribute(self, node: ast.Attribute) -> Any:  # noqa: N802 (ast visitor name)
        if private.private_name(node.attr):
            # `obj._x` reads through `_getattr_`, `obj._x = v` / `del obj._x` write
            # through `_write_private_(obj)`: both ask the guard whose `_x` is.
            value = self.visit(node.value)
            new: Any
            if isinstance(node.ctx, ast.Load):
                new = ast.Call(
                    func=ast.Name("_getattr_", ast.Load()),
                    args=[value, ast.Constant(node.attr)],
                    keywords=[],
                )
            else:
                target = ast.Call(
                    func=ast.Name("_write_private_", ast.Load()), args=[value], keywords=[]
                )
                new = ast.Attribute(value=target, attr=node.attr, ctx=node.ctx)
            ast.copy_location(new, node)
            ast.fix_missing_locations(new)
            return new
        if node.attr in _ALLOWED_DUNDER_ATTRIBUTES:
            placeholder = "quarry_dunder_" + node.attr.strip("_")
            original = node.attr
            node.attr = placeholder
            new = super().visit_Attribute(node)
            for child in ast.walk(new) if isinstance(new, ast.AST) else ():
                if isinstance(child, ast.Constant) and child.value == placeholder:
                    child.value = original
                elif isinstance(child, ast.Attribute) and child.attr == placeholder:
                    child.attr = original
            return new
        return super().visit_Attribute(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> Any:  # noqa: N802 (ast visitor name)
        target = node.target
        if isinstance(target, ast.Name):
            return super().visit_AugAssign(node)
        op = _OPERATORS[type(node.op)]
        value = self.visit(node.value)
        if isinstance(target, ast.Subscript):
            container = self.visit(target.value)
            key = _as_expression(self.visit(target.slice))
            call = ast.Call(
                func=ast.Name("_inplace_item_", ast.Load()),
                args=[_write(container), key, ast.Constant(op), value],
                keywords=[],
            )
        else:
            assert isinstance(target, ast.Attribute)
            if target.attr.startswith("_") and not private.private_name(target.attr):
                self.error(node, f'"{target.attr}" is an invalid attribute name.')
                return node
            container = self.visit(target.value)
            call = ast.Call(
                func=ast.Name("_inplace_attr_", ast.Load()),
                args=[_write(container), ast.Constant(target.attr), ast.Constant(op), value],
                keywords=[],
            )
        new = ast.Expr(value=call)
        ast.copy_location(new, node)
        ast.fix_missing_locations(new)
        return new


_OPERATORS = {
    ast.Add: "+=",
    ast.Sub: "-=",
    ast.Mult: "*=",
    ast.Div: "/=",
    ast.FloorDiv: "//=",
    ast.Mod: "%=",
    ast.Pow: "**=",
    ast.LShift: "<<=",
    ast.RShift: ">>=",
    ast.BitAnd: "&=",
    ast.BitXor: "^=",
    ast.BitOr: "|=",
    ast.MatMult: "@=",
}


def _write(node: ast.expr) -> ast.expr:
    return ast.Call(func=ast.Name("_write_", ast.Load()), args=[node], keywords=[])


def _as_expression(node: ast.expr) -> ast.expr:
    """A subscript's slice as a value (`a[1:3]` -> `slice(1, 3)`)."""
    if isinstance(node, ast.Slice):
        none = ast.Constant(None)
        return ast.Call(
            func=ast.Name("slice", ast.Load()),
            args=[node.lower or none, node.upper or none, node.step or none],
            keywords=[],
        )
    if isinstance(node, ast.Tuple):
        return ast.Tuple(elts=[_as_expression(e) for e in node.elts], ctx=ast.Load())
    return node


class CompileError(Exception):
    def __init__(self, message: str, line: int | None, kind: str) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.kind = kind


_LINE = re.compile(r"^Line (\d+): ")


def compile_snippet(code: str, filename: str = "<snippet>") -> tuple[Any, Any]:
    """(statements, last expression or None): the value of a final expression is the
    snippet's result, as in a notebook cell."""
    try:
        tree = ast.parse(code, filename=filename, mode="exec")
    except SyntaxError as exc:
        raise CompileError(f"{exc.msg}", exc.lineno, "SyntaxError") from None
    last: ast.Expression | None = None
    final = tree.body[-1] if tree.body else None
    # A final `print(...)` stays a statement: RestrictedPython sets up printing per
    # module, which a separately compiled expression would not have (and it shows None).
    if isinstance(final, ast.Expr) and not any(
        isinstance(node, ast.Name) and node.id == "print" for node in ast.walk(final)
    ):
        tree.body.pop()
        last = ast.Expression(body=final.value)
    body = compile_restricted_exec(tree, filename=filename, policy=QuarryTransformer)
    _raise_errors(body.errors)
    result = None
    if last is not None:
        compiled = compile_restricted_eval(last, filename=filename, policy=QuarryTransformer)
        _raise_errors(compiled.errors)
        result = compiled.code
    return body.code, result


def _raise_errors(errors: Iterable[str]) -> None:
    first = next(iter(errors), None)
    if first is None:
        return
    match = _LINE.match(first)
    line = int(match.group(1)) if match else None
    message = _LINE.sub("", first)
    raise CompileError(message, line, "PolicyError")
