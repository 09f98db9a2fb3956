"""The guard: every value a snippet reads is checked, and modules reach it only behind a
read-only proxy.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

from runner import private
from runner.policy.audit import install_audit_hook
from runner.policy.libraries import _ACCESSORS, _LIBRARY_RULES
from runner.policy.modules import (
    _ALLOWED_DUNDER_ATTRIBUTES,
    _ESCAPE_ATTRIBUTES,
    ALLOWED_MODULES,
    PARTIAL_MODULES,
    PolicyError,
    _check_template,
    module_allowed,
    origin_allowed,
)
from runner.policy.rules import _MEMORY_FILES, _NO_FILES, Rules, build_rules


class ModuleProxy:
    """What user code gets for an allowed module: attribute reads go through the guard,
    writes are refused, and the real module object is never handed out."""

    __slots__ = ("_quarry_module",)
    __module__ = "runner.policy"  # what a refusal names: the package, not its inner module

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
