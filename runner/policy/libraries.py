"""The rules of each allowed library (numpy, pandas, plotly, scikit-learn, scipy), loaded
when the library is first imported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from runner.policy.modules import PolicyError
from runner.policy.rules import (
    _NO_FILES,
    _NUMPY_TESTING_KEPT,
    _PANDAS_MUTATORS,
    Rules,
    _attr,
    _checked_class,
    _dispatch,
    _expression,
    _in_memory_reader,
    _mutating,
    _no_format_walks,
    _plain,
    _plain_memory,
    _writer,
)


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
