"""Compiling a snippet: RestrictedPython's transformer with Quarry's additions."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from typing import Any

from RestrictedPython.compile import compile_restricted_eval, compile_restricted_exec
from RestrictedPython.transformer import RestrictingNodeTransformer

from runner import private
from runner.policy.modules import _ALLOWED_DUNDER_ATTRIBUTES, SNIPPET_FILENAME

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


def compile_snippet(code: str, filename: str = SNIPPET_FILENAME) -> tuple[Any, Any]:
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
