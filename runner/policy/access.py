"""Writes, in-place operators, imports and the builtins a snippet gets."""

from __future__ import annotations

import builtins
import contextlib
import importlib
import operator
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from RestrictedPython.Guards import (
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safe_builtins,
)

from runner import private
from runner.policy.guard import GUARD, ModuleProxy
from runner.policy.modules import (
    ALLOWED_MODULES,
    PARTIAL_MODULES,
    WRITTEN,
    PolicyError,
    module_importable,
)
from runner.policy.rules import _NO_FILES

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
