"""Library rules: what the allowed libraries' functions and classes may do when a snippet
calls them (refused, wrapped, checked), and the wrappers that do it.
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import io
import operator
import re
import string
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

from runner.policy.modules import _FORMAT_WALK, SNIPPET_FILENAME, WRITTEN, PolicyError

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
