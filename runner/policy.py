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
  only from the allow-list (and then behind a proxy), no functions or classes from modules
  that touch files, processes, the network or the interpreter (pandas re-exports `os`,
  numpy `ctypes`, scikit-learn `joblib`...), library I/O refused with a message, writer
  methods only without a path;
- guards item access, iteration, unpacking, writes and in-place operators;
- gives a vetted set of builtins and an import hook that knows the allow-list.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import operator
import re
import string
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from RestrictedPython import compile_restricted_eval, compile_restricted_exec, safe_builtins
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence
from RestrictedPython.transformer import INSPECT_ATTRIBUTES, RestrictingNodeTransformer

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
    "numpy.testing",
    "numpy.ctypeslib",
    "numpy.lib.format",
    "numpy.lib.npyio",
    "numpy.lib._npyio_impl",
    "numpy.lib._datasource",
    "numpy.lib.stride_tricks",
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

_ALLOWED_DUNDER_ATTRIBUTES = frozenset({"__init__", "__name__"})
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


def _within(name: str, prefixes: Iterable[str]) -> bool:
    # "pkg.mod" covers itself and its submodules; a prefix ending in "_" covers every
    # private name beginning with it.
    return any(
        name == p or name.startswith(p + ".") or (p.endswith("_") and name.startswith(p))
        for p in prefixes
    )


def module_allowed(name: str) -> bool:
    return name.split(".", 1)[0] in ALLOWED_MODULES and not _within(name, DENIED_MODULE_PREFIXES)


def _denied_module(name: str) -> bool:
    return _within(name, DENIED_CALLABLE_MODULES)


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
_WRITER_HINT = "call it without a path (it then returns the text or bytes) instead"
_PATH_KEYWORDS = ("path_or_buf", "buf", "path", "excel_writer", "fname", "filename", "file")
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
    """`df.to_csv()` returns text; `df.to_csv("out.csv")` would write a file."""

    def checked(*args: Any, **kwargs: Any) -> Any:
        positional = args[1:]
        if (positional and positional[0] is not None) or any(
            kwargs.get(k) is not None for k in _PATH_KEYWORDS
        ):
            raise PolicyError(f"{name}() cannot write files in the sandbox: {_WRITER_HINT}.")
        return func(*args, **kwargs)

    return checked


def _expression(func: Any, name: str) -> Callable[..., Any]:
    """`df.query("age < 40")` is fine; `@name`, backticks and dunders reach outside."""

    def checked(*args: Any, **kwargs: Any) -> Any:
        positional = args[1:]
        expr = positional[0] if positional else kwargs.get("expr")
        if (
            not isinstance(expr, str)
            or "@" in expr
            or "`" in expr
            or "__" in expr
            or not (_SAFE_QUERY.match(expr))
        ):
            raise PolicyError(
                f"{name}() accepts plain column expressions only (no @variables, backticks "
                "or dunders); use boolean indexing, e.g. df[df['age'] < 40], instead."
            )
        kwargs.pop("local_dict", None)
        kwargs.pop("global_dict", None)
        kwargs.pop("resolvers", None)
        return func(*args, **kwargs)

    return checked


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
        "id",
        "getattr",
        "setattr",
        "delattr",
        "dir",
    ):
        rules.deny(getattr(builtins, name, None), f"{name}() is not available in the sandbox.")
    rules.deny(string.Formatter, "string.Formatter is not available in the sandbox.")
    rules.deny(operator.attrgetter, "operator.attrgetter is not available in the sandbox.")
    rules.deny(operator.methodcaller, "operator.methodcaller is not available in the sandbox.")
    return rules


def _numpy_rules(rules: Rules) -> None:
    import numpy as np

    for name in (
        "load",
        "save",
        "savez",
        "savez_compressed",
        "loadtxt",
        "savetxt",
        "genfromtxt",
        "fromfile",
        "fromregex",
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


def _pandas_rules(rules: Rules) -> None:
    import pandas as pd

    for name in dir(pd):
        if name.startswith("read_"):
            rules.deny(getattr(pd, name), f"pandas.{name} reads files or URLs. {_NO_FILES}")
    for name in ("to_pickle", "eval", "HDFStore", "ExcelWriter", "ExcelFile", "read_pickle"):
        rules.deny(getattr(pd, name, None), f"pandas.{name} is not available in the sandbox.")
    frames = [pd.DataFrame, pd.Series, pd.Index]
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
            rules.wrap(func, lambda f, m=method: _writer(f, m))
        for method in ("eval", "query"):
            rules.wrap(getattr(cls, method, None), lambda f, m=method: _expression(f, m))
        for method in ("apply", "agg", "aggregate", "transform", "map", "applymap"):
            rules.wrap(getattr(cls, method, None), lambda f, m=method: _dispatch(f, m))
        rules.attributes[(cls, "style")] = "The Styler is not available in the sandbox."
    for group in _groupby_classes(pd):
        for method in ("apply", "agg", "aggregate", "transform"):
            rules.wrap(getattr(group, method, None), lambda f, m=method: _dispatch(f, m))


def _groupby_classes(pd: Any) -> list[type]:
    classes = []
    for dotted in (
        "core.groupby.DataFrameGroupBy",
        "core.groupby.SeriesGroupBy",
        "core.resample.Resampler",
        "core.window.rolling.Rolling",
        "core.window.expanding.Expanding",
    ):
        cls = _attr(pd, dotted)
        if isinstance(cls, type):
            classes.append(cls)
    return classes


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


# Library rules are built when the library is first imported in the process (by the
# snippet, or by the runner loading a dataset): a snippet that only does arithmetic does
# not pay for importing scikit-learn.
_LIBRARY_RULES = {
    "numpy": _numpy_rules,
    "pandas": _pandas_rules,
    "plotly": _plotly_rules,
    "sklearn": _sklearn_rules,
    "scipy": _scipy_rules,
}


# --- the guard --------------------------------------------------------------------------------


class Guard:
    def __init__(self) -> None:
        self.rules: Rules | None = None

    def ready(self) -> Rules:
        rules = self.rules
        if rules is None:
            rules = self.rules = build_rules()
        if len(rules.libraries) < len(_LIBRARY_RULES):
            modules = sys.modules
            for name, load in _LIBRARY_RULES.items():
                if name not in rules.libraries and name in modules:
                    rules.libraries.add(name)
                    load(rules)
        return rules

    def check_name(self, obj: Any, name: str) -> None:
        if type(name) is not str:
            raise TypeError("attribute name must be a string")
        if name.startswith("_") and name not in _ALLOWED_DUNDER_ATTRIBUTES:
            raise AttributeError(
                f'"{name}" is not available in the sandbox (names starting with "_" are private).'
            )
        if name in _ESCAPE_ATTRIBUTES:
            raise AttributeError(f'"{name}" is not available in the sandbox.')
        if name in ("format", "format_map") and (
            isinstance(obj, str) or (isinstance(obj, type) and issubclass(obj, str))
        ):
            raise PolicyError(
                "str.format is not available in the sandbox; use an f-string, e.g. f'{value:.2f}'."
            )

    def getattr(self, obj: Any, name: str, *default: Any) -> Any:
        obj = unwrap_module(obj)
        self.check_name(obj, name)
        rules = self.ready()
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
        return self.value(value, name)

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
        target = getattr(value, "__func__", None)  # a bound Python method
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
        if callable(value) or isinstance(value, type):
            module = getattr(target or value, "__module__", None)
            if isinstance(module, str) and _denied_module(module):
                raise PolicyError(
                    f"{getattr(value, '__qualname__', name or 'This object')} (from {module}) "
                    f"is not available in the sandbox. {_NO_FILES}"
                )
        return value

    def getitem(self, obj: Any, key: Any) -> Any:
        return self.value(obj[key])

    def iterate(self, obj: Any) -> Iterator[Any]:
        if type(obj) is ModuleProxy:
            raise TypeError("modules are not iterable")
        guard = self.value
        for item in obj:
            yield guard(item)


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

_INPLACE = {
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


def guarded_write(obj: Any) -> Any:
    """The target of an assignment to an item or attribute. Data (DataFrames, arrays,
    dicts, lists, instances of the snippet's own classes) may change; modules, classes and
    functions may not (changing a library from inside would disarm its guards)."""
    if type(obj) is ModuleProxy or isinstance(
        obj, type | types.ModuleType | types.FunctionType | types.BuiltinFunctionType
    ):
        return _ReadOnly(obj)
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

    __delitem__ = __setitem__  # type: ignore[assignment]


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
    if not module_allowed(name):
        allowed = ", ".join(sorted(ALLOWED_MODULES))
        raise ImportError(f"Module '{name}' is not available in the sandbox. Allowed: {allowed}.")
    try:
        module = importlib.import_module(name)
    except ImportError:
        raise ImportError(f"Module '{name}' is not installed in the sandbox.") from None
    for hook in IMPORT_HOOKS:
        hook(name)
    if fromlist:
        return ModuleProxy(module)
    return ModuleProxy(importlib.import_module(name.split(".", 1)[0]))


def apply(func: Any, *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


def safe_type(obj: Any, *args: Any) -> Any:
    if args:
        raise PolicyError("type() with three arguments is not available; use a class statement.")
    return type(obj)


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
    for name in ("id", "memoryview", "open", "compile", "eval", "exec"):
        names.pop(name, None)
    names.update(
        __import__=guarded_import,
        __name__="__quarry__",
        __metaclass__=type,
        _getattr_=guarded_getattr,
        _getitem_=guarded_getitem,
        _getiter_=guarded_getiter,
        _write_=guarded_write,
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
    `super().__init__(...)` / `__name__`."""

    def visit_Attribute(self, node: ast.Attribute) -> Any:  # noqa: N802 (ast visitor name)
        if node.attr in _ALLOWED_DUNDER_ATTRIBUTES:
            placeholder = "quarry_dunder_" + node.attr.strip("_")
            original = node.attr
            node.attr = placeholder
            new = super().visit_Attribute(node)
            for child in ast.walk(new):
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
            if target.attr.startswith("_"):
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
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(body=tree.body.pop().value)
    body = compile_restricted_exec(tree, filename=filename, policy=QuarryTransformer)
    _raise_errors(body.errors)
    result = None
    if last is not None:
        compiled = compile_restricted_eval(last, filename=filename, policy=QuarryTransformer)
        _raise_errors(compiled.errors)
        result = compiled.code
    return body.code, result


def _raise_errors(errors: tuple[str, ...]) -> None:
    if not errors:
        return
    first = errors[0]
    match = _LINE.match(first)
    line = int(match.group(1)) if match else None
    message = _LINE.sub("", first)
    raise CompileError(message, line, "PolicyError")
