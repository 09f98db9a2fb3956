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

The parts (each imports only those before it):
- `modules.py`: the module allow-list, origins, and the names the parts share
  (`SNIPPET_FILENAME`, `WRITTEN`, `PolicyError`);
- `rules.py`: the library rules and the wrappers that refuse, wrap or check calls;
- `libraries.py`: each allowed library's rules, loaded when it is first imported;
- `audit.py`: the PEP 578 audit hook;
- `guard.py`: the guard every value a snippet reads goes through, and module proxies;
- `access.py`: writes, in-place operators, imports and the snippet's builtins;
- `compiler.py`: the RestrictedPython transformer and `compile_snippet`.
"""

from __future__ import annotations

from runner.policy.access import (
    IMPORT_HOOKS,
    REFUSED_BUILTINS,
    guarded_getattr,
    guarded_import,
    make_builtins,
)
from runner.policy.audit import install_audit_hook, one_job
from runner.policy.compiler import CompileError, compile_snippet
from runner.policy.guard import GUARD, Guard, ModuleProxy
from runner.policy.modules import SNIPPET_FILENAME, WRITTEN, PolicyError, module_allowed

__all__ = [
    "GUARD",
    "IMPORT_HOOKS",
    "REFUSED_BUILTINS",
    "SNIPPET_FILENAME",
    "WRITTEN",
    "CompileError",
    "Guard",
    "ModuleProxy",
    "PolicyError",
    "compile_snippet",
    "guarded_getattr",
    "guarded_import",
    "install_audit_hook",
    "make_builtins",
    "module_allowed",
    "one_job",
]
