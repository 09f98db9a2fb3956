"""Private names in a snippet: what its own classes may keep, and what stays the libraries'.

Analysis code writes classes with private state (`self._cache = {}`), helper names
(`_p = list(p)`), and the hooks a library documents for subclasses (scipy's `def _pdf`,
scikit-learn's `def _get_support_mask`); RestrictedPython refuses every name starting
with `_`, because the libraries' own private names (`df._mgr`, `np._core`) lead to their
internals. The line drawn here:

- a name with one leading underscore (`_x`, not `__x`, not ending in `_`, which is where
  RestrictedPython's own helpers live: `_getattr_`, `_print`) may be a variable, an
  argument, a function or a class attribute defined in the snippet;
- `obj._x` is read or written only on a class the snippet defined (made by its `class`
  statement, recorded here) or an instance of one, and only if no library class in its
  method resolution order defines or uses `_x`: a name in a library class' namespace, or in
  the names and string constants of its methods' code, is the library's (pandas stores
  `_mgr` with `object.__setattr__(self, "_mgr", ...)`; its code says so). A snippet's
  subclass of a library class thus keeps its own private state but cannot read or replace
  the base class' — replacing it would hand library code (and compiled code that trusts
  its own attributes) an object of the snippet's making;
- a snippet class may define the usual protocol methods (`__repr__`, `__len__`,
  `__call__`, arithmetic, numpy's `__array_ufunc__`...), never those that change how
  attributes are looked up or that hand out raw memory (`__getattr__`,
  `__array_interface__`, `__buffer__`, `__dataframe__`...): numpy and pandas ask an object
  for those, and would take a forged answer as memory.
"""

from __future__ import annotations

import builtins
import re
import types
import weakref
from typing import Any

# Classes made by a snippet's `class` statement (`__build_class__` records them).
SNIPPET_CLASSES: weakref.WeakSet[type] = weakref.WeakSet()
SNIPPET_MODULE = "__quarry__"  # the `__name__` a snippet runs under

_PRIVATE = re.compile(r"^_[A-Za-z0-9](?:\w*[A-Za-z0-9])?$")
_RESERVED = frozenset({"_print", "_abc_impl"})

# Protocol methods a snippet's class may define (Python's, numpy's dispatch, pandas'
# `__from_arrow__`, scipy's `make_distribution` marker). RestrictedPython allows only
# `__init__` and comparisons; these run the snippet's own (restricted) code when Python
# or a library calls them. Absent on purpose: attribute hooks (`__getattr__`, `__getattribute__`,
# `__setattr__`, `__delattr__`: numpy looks up `__array_interface__` through them),
# construction and class hooks (`__new__`, `__init_subclass__`, `__set_name__`,
# `__class_getitem__`), `__format__` (code run from inside a template: HackTricks'
# HAL9000), descriptors, finalizers (`__del__` runs whenever the collector does),
# pickling, buffers and the data interchange protocols (`__buffer__`, `__dlpack__`,
# `__dataframe__`, `__arrow_c_*`), paths (`__fspath__`).
_PROTOCOL = """repr str len iter next reversed getitem setitem delitem missing call hash bool
enter exit neg pos abs invert float int index complex round trunc floor ceil array
array_ufunc array_function post_init
from_arrow make_distribution_version"""
_ARITHMETIC = "add sub mul matmul truediv floordiv mod pow and or xor lshift rshift divmod"
PROTOCOL_METHODS = frozenset(
    {
        *(f"__{prefix}{op}__" for op in _ARITHMETIC.split() for prefix in ("", "r", "i")),
        *(f"__{name}__" for name in _PROTOCOL.split()),
    }
)


def private_name(name: str) -> bool:
    """A name a snippet may use although it starts with `_` (`_x`, `_HANDLED_TYPES`)."""
    return bool(_PRIVATE.match(name)) and name not in _RESERVED


def build_class(func: Any, name: str, *bases: Any, **kwargs: Any) -> Any:
    """The snippet's `__build_class__`: Python's, recording the class made."""
    cls = builtins.__build_class__(func, name, *bases, **kwargs)
    # A metaclass could hand back some other class: only one whose body ran in the
    # snippet's namespace (and so says it belongs there) is recorded.
    if isinstance(cls, type) and cls.__dict__.get("__module__") == SNIPPET_MODULE:
        SNIPPET_CLASSES.add(cls)
    return cls


def snippet_class(cls: Any) -> bool:
    return isinstance(cls, type) and cls in SNIPPET_CLASSES


_LIBRARY_NAMES: dict[type, frozenset[str]] = {}


def _code_names(code: types.CodeType, found: set[str]) -> None:
    found.update(n for n in code.co_names if n.startswith("_"))
    for const in code.co_consts:
        if isinstance(const, str) and const.startswith("_"):
            found.add(const)
        elif isinstance(const, types.CodeType):
            _code_names(const, found)


def _functions(value: Any) -> list[Any]:
    """The functions behind a class attribute: a method, a static or class method, a
    property's accessors, a cached property's function."""
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    if isinstance(value, property):
        return [value.fget, value.fset, value.fdel]
    if isinstance(value, types.FunctionType):
        return [value]
    try:
        return [getattr(value, "func", None)]  # functools.cached_property, partialmethod
    except Exception:  # whatever a library descriptor raises: nothing to read there
        return []


def library_names(cls: type) -> frozenset[str]:
    """The private names a library class owns: defined in its namespace or used by its
    methods' code (attribute names and strings such as `object.__setattr__(self, "_x")`)."""
    cached = _LIBRARY_NAMES.get(cls)
    if cached is not None:
        return cached
    found: set[str] = set()
    for key, value in list(vars(cls).items()):
        if key.startswith("_"):
            found.add(key)
        for func in _functions(value):
            code = getattr(func, "__code__", None)
            if isinstance(code, types.CodeType):
                _code_names(code, found)
    names = frozenset(found)
    _LIBRARY_NAMES[cls] = names
    return names


# collections.namedtuple's documented API (`row._asdict()` for a row of df.itertuples()).
_NAMEDTUPLE_API = frozenset({"_asdict", "_replace", "_fields", "_field_defaults", "_make"})


def _namedtuple(cls: type) -> bool:
    make = next((vars(c)["_make"] for c in cls.__mro__ if "_make" in vars(c)), None)
    func = getattr(make, "__func__", None) if isinstance(make, classmethod) else None
    return isinstance(func, types.FunctionType) and func.__globals__.get("__name__") == (
        "collections"
    )


def refusal(obj: Any, name: str) -> str | None:
    """Why the snippet may not read or write `obj.<name>` (a private name), or None."""
    is_class = isinstance(obj, type)
    cls = obj if is_class else type(obj)
    if name in _NAMEDTUPLE_API and _namedtuple(cls):
        return None
    if not snippet_class(cls):
        return (
            f'"{name}" is not available in the sandbox (names starting with "_" are '
            "private; only the snippet's own classes may keep such attributes)."
        )
    # A class' attributes also come from its metaclass (abc.ABCMeta's `_dump_registry`).
    classes = (*cls.__mro__, *(type(cls).__mro__ if is_class else ()))
    for base in classes:
        if base is object or base is type or snippet_class(base):
            continue
        if name in library_names(base):
            return (
                f'"{name}" belongs to {base.__module__}.{base.__qualname__} (its code uses '
                "it) and is not available in the sandbox; give the snippet's own attribute "
                "another name."
            )
    return None
