"""Chat templates (GGUF ``tokenizer.chat_template``), judged on Jinja2's own syntax tree.

Loaders render these templates with Jinja2; llama.cpp's Python bindings rendered them without a
sandbox before CVE-2024-34359, so a template that reaches Python internals runs code when a chat
starts. A template is judged statically, by the rules of Jinja2's ``SandboxedEnvironment``
(which refuses any attribute whose name starts with ``_`` and the internal attributes
``is_internal_attribute`` lists), applied to every way a template can name an attribute:

* ``x.name`` and ``x['name']`` (Jinja's subscript falls back to attribute lookup) with such a
  name; string escapes (``'\\x5f\\x5fclass\\x5f\\x5f'``) are already decoded by Jinja's lexer;
* a subscript, ``attr`` filter or attribute argument of ``map``, ``selectattr``, ``rejectattr``,
  ``sort``, ``groupby``, ``sum``, ``unique``, ``min``, ``max`` whose name the template computes
  (concatenation, ``~``, ``+``, ``%``, ``format``, ``join``, ``replace``, a variable the
  template sets to such a value, ...) and which does not fold to a constant: the name can be
  anything. Names taken from the data the template is rendered with (``messages``, ``tools``,
  loop variables over them) are the caller's, not the template's, and are not held against it;
* ``str.format`` with a format string that reaches attributes or items (``'{0.__class__}'``),
  or whose format string is computed.

Any of these is *dangerous*. Loading other templates (``include``, ``import``, ``extends``) is
*unknown*: chat-template renderers have no loader. A template Jinja2 cannot parse is an error.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from typing import Any, NamedTuple

__all__ = ["TemplateVerdict", "judge_template"]

#: Attribute names the sandbox refuses besides those starting with "_" (is_internal_attribute,
#: and the frame, traceback and code attributes reachable from them).
_INTERNAL = frozenset({
    "mro", "gi_code", "gi_frame", "gi_yieldfrom", "cr_code", "cr_frame", "cr_await", "ag_code",
    "ag_frame", "ag_await", "f_globals", "f_locals", "f_builtins", "f_back", "f_code",
    "tb_frame", "tb_next", "co_code", "func_globals", "func_code", "im_func", "im_self",
})
#: Filters that look up an attribute named by an argument: filter -> (positional index, kwarg).
_ATTRIBUTE_FILTERS: dict[str, tuple[int | None, str | None]] = {
    "attr": (0, None), "selectattr": (0, None), "rejectattr": (0, None),
    "map": (None, "attribute"), "sort": (None, "attribute"), "groupby": (0, "attribute"),
    "sum": (None, "attribute"), "unique": (None, "attribute"), "min": (None, "attribute"),
    "max": (None, "attribute"),
}
#: Filters and tests that map/select/reject apply by name: ``map('attr', name)`` is ``attr``.
_APPLYING_FILTERS = frozenset({"map", "select", "reject"})
_FOLDABLE_FILTERS = frozenset({"lower", "upper", "string", "trim", "reverse", "join", "replace",
                               "first", "last", "capitalize", "title"})
_MAX_FOLD = 1 << 12


class TemplateVerdict(NamedTuple):
    dangerous: bool
    """False: unknown (suspicious, not a known attack)."""
    subject: str
    message: str


class _Origin:
    """What a value can be: template constants, caller data, or something the template built."""

    __slots__ = ("built", "consts", "data")

    def __init__(self, consts: frozenset[Any] = frozenset(), *, data: bool = False,
                 built: bool = False) -> None:
        self.consts = consts
        self.data = data
        self.built = built

    def __or__(self, other: _Origin) -> _Origin:
        return _Origin(self.consts | other.consts, data=self.data or other.data,
                       built=self.built or other.built)


_DATA = _Origin(data=True)
_BUILT = _Origin(built=True)
_NUMBER = _Origin(frozenset({0}))
"""Any number (never an attribute name): ``range()``, ``|length``, arithmetic."""
_BOOL = _Origin(frozenset({True, False}))
#: Filters whose result is a number.
_NUMERIC_FILTERS = frozenset({"length", "count", "int", "float", "abs", "round", "wordcount",
                              "filesizeformat"})
#: Filters and methods whose result can contain characters chosen by their arguments: applied to
#: the caller's data with template-chosen arguments, the result is the template's.
_INJECTING = frozenset({"replace", "join", "format", "format_map", "center", "indent",
                        "wordwrap", "truncate", "default", "d", "get", "pop", "setdefault",
                        "ljust", "rjust", "zfill", "urlize", "xmlattr", "sum", "batch",
                        "slice", "map", "__add__"})


def _numeric(origin: _Origin) -> bool:
    return bool(origin.consts) and not origin.data and not origin.built and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in origin.consts)


def _is_plain_data(origin: _Origin) -> bool:
    return origin.data and not origin.built and not origin.consts


def _const(value: Any) -> _Origin:
    try:
        return _Origin(frozenset({value}))
    except TypeError:  # unhashable literal
        return _BUILT


def _is_bad_name(name: str, *, dotted: bool = False) -> bool:
    parts = name.split(".") if dotted else [name]
    return any(p.startswith("_") or p in _INTERNAL for p in parts)


class _Judge:
    def __init__(self, template: Any) -> None:
        from jinja2 import nodes

        self.nodes = nodes
        self.template = template
        self.bindings: dict[str, list[Any]] = {}
        """name -> expressions (or origins) it may be bound to."""
        self.ns_attrs: dict[tuple[str, str], list[Any]] = {}
        self.verdicts: dict[str, TemplateVerdict] = {}
        self._resolving: set[str] = set()
        self._collect_bindings()

    # -- bindings --------------------------------------------------------------------------------
    def _bind(self, target: Any, value: Any) -> None:
        nodes = self.nodes
        if isinstance(target, nodes.Name):
            self.bindings.setdefault(target.name, []).append(value)
        elif isinstance(target, nodes.NSRef):
            self.ns_attrs.setdefault((target.name, target.attr), []).append(value)
        elif isinstance(target, nodes.Tuple | nodes.List):
            items = value.items if isinstance(value, nodes.Tuple | nodes.List) and len(
                value.items) == len(target.items) else None
            for index, item in enumerate(target.items):
                self._bind(item, items[index] if items is not None else ("element", value))

    def _collect_bindings(self) -> None:
        nodes = self.nodes
        macros: dict[str, Any] = {}
        for node in self.template.find_all((nodes.Assign, nodes.AssignBlock, nodes.For,
                                            nodes.With, nodes.Macro, nodes.CallBlock)):
            if isinstance(node, nodes.Assign):
                self._bind(node.target, node.node)
                call = node.node
                if (isinstance(node.target, nodes.Name) and isinstance(call, nodes.Call)
                        and isinstance(call.node, nodes.Name) and call.node.name == "namespace"):
                    for keyword in call.kwargs:
                        self.ns_attrs.setdefault((node.target.name, keyword.key), []).append(
                            keyword.value)
                    if call.args or call.dyn_args or call.dyn_kwargs:
                        self.bindings.setdefault("<namespace:" + node.target.name, []).append(
                            _BUILT)
            elif isinstance(node, nodes.AssignBlock):
                self._bind(node.target, _BUILT)
            elif isinstance(node, nodes.For):
                self._bind(node.target, ("element", node.iter))
            elif isinstance(node, nodes.With):
                for target, value in zip(node.targets, node.values, strict=False):
                    self._bind(target, value)
            elif isinstance(node, nodes.Macro):
                macros[node.name] = node
            if isinstance(node, nodes.Macro | nodes.CallBlock):
                defaults = node.defaults
                for index, arg in enumerate(node.args):
                    offset = index - (len(node.args) - len(defaults))
                    if offset >= 0:
                        self._bind(arg, defaults[offset])
                if isinstance(node, nodes.CallBlock):
                    for arg in node.args:  # caller(...) arguments: whatever the macro passes
                        self._bind(arg, _BUILT)
        # macro parameters take every value a call passes them
        for call in self.template.find_all(nodes.Call):
            if isinstance(call.node, nodes.Name) and call.node.name in macros:
                macro = macros[call.node.name]
                params = [arg.name for arg in macro.args]
                for index, value in enumerate(call.args):
                    if index < len(params):
                        self.bindings.setdefault(params[index], []).append(value)
                    else:
                        self.bindings.setdefault("varargs", []).append(value)
                for keyword in call.kwargs:
                    self.bindings.setdefault(keyword.key, []).append(keyword.value)
                if call.dyn_args is not None or call.dyn_kwargs is not None:
                    for param in params:
                        self.bindings.setdefault(param, []).append(_BUILT)

    # -- what a value can be ---------------------------------------------------------------------
    def origin(self, expr: Any, depth: int = 0) -> _Origin:
        nodes = self.nodes
        if depth > 64:
            return _BUILT
        if isinstance(expr, _Origin):
            return expr
        if isinstance(expr, tuple) and expr[0] == "element":
            return self._element(expr[1], depth + 1)
        if isinstance(expr, nodes.Const):
            return _const(expr.value)
        if isinstance(expr, nodes.TemplateData):
            return _const(expr.data)
        if isinstance(expr, nodes.Name):
            return self._name(expr.name, depth)
        if isinstance(expr, nodes.Test | nodes.Compare | nodes.Not):
            return _BOOL
        if isinstance(expr, nodes.Sub | nodes.Div | nodes.FloorDiv | nodes.Pow | nodes.Neg
                      | nodes.Pos):
            return _NUMBER
        if isinstance(expr, nodes.Add | nodes.Mul):
            left, right = self.origin(expr.left, depth + 1), self.origin(expr.right, depth + 1)
            if isinstance(expr, nodes.Add) and (_numeric(left) or _numeric(right)) and (
                _numeric(left) or _is_plain_data(left)) and (
                _numeric(right) or _is_plain_data(right)):
                return _NUMBER  # index arithmetic: ``messages[loop.index0 + 1]``
        if isinstance(expr, nodes.And | nodes.Or):
            return self.origin(expr.left, depth + 1) | self.origin(expr.right, depth + 1)
        if isinstance(expr, nodes.CondExpr):
            out = self.origin(expr.expr1, depth + 1)
            return out | (self.origin(expr.expr2, depth + 1) if expr.expr2 is not None
                          else _const(None))
        if isinstance(expr, nodes.Getattr | nodes.Getitem):
            base = expr.node
            if isinstance(expr, nodes.Getattr) and isinstance(base, nodes.Name) and (
                (base.name, expr.attr) in self.ns_attrs
            ):
                return self._values(self.ns_attrs[(base.name, expr.attr)], depth)
            if self._is_data(base, depth):
                return _DATA
            folded = self._fold(expr, depth)
            return folded if folded is not None else _BUILT
        if isinstance(expr, nodes.Call) and isinstance(expr.node, nodes.Name) and (
            expr.node.name == "range" and expr.node.name not in self.bindings
        ):
            return _NUMBER
        if isinstance(expr, nodes.Filter) and expr.name in _NUMERIC_FILTERS:
            return _NUMBER
        if isinstance(expr, nodes.Filter | nodes.Call):
            if isinstance(expr, nodes.Filter):
                base, name = expr.node, expr.name
            elif isinstance(expr.node, nodes.Getattr):
                base, name = expr.node.node, expr.node.attr
            else:
                base, name = None, ""
            if base is not None and self._is_data(base, depth):
                args = [*expr.args, *(k.value for k in expr.kwargs)]
                dynamic = expr.dyn_args is not None or expr.dyn_kwargs is not None
                if name not in _INJECTING or (
                    not dynamic and all(self._is_data(a, depth) for a in args)
                ):
                    return _DATA  # derived from the caller's data alone
        folded = self._fold(expr, depth)
        if folded is not None:
            return folded
        if isinstance(expr, nodes.Concat | nodes.Add | nodes.Mod | nodes.Mul):
            parts = expr.nodes if isinstance(expr, nodes.Concat) else [expr.left, expr.right]
            if all(self._is_data(p, depth) for p in parts):
                return _DATA
        return _BUILT

    def _is_data(self, expr: Any, depth: int) -> bool:
        origin = self.origin(expr, depth + 1)
        return origin.data and not origin.built and not origin.consts

    def _values(self, values: list[Any], depth: int) -> _Origin:
        out = _Origin()
        for value in values:
            out = out | self.origin(value, depth + 1)
        return out

    def _name(self, name: str, depth: int) -> _Origin:
        if name not in self.bindings:
            return _DATA  # a variable the caller renders the template with
        if name in self._resolving:
            return _DATA  # ``set x = x[1:]``: the earlier value, itself among the bindings
        self._resolving.add(name)
        try:
            return self._values(self.bindings[name], depth)
        finally:
            self._resolving.discard(name)

    def _element(self, iterable: Any, depth: int) -> _Origin:
        nodes = self.nodes
        if isinstance(iterable, nodes.List | nodes.Tuple):
            out = _Origin()
            for item in iterable.items:
                out = out | self.origin(item, depth + 1)
                if isinstance(item, nodes.List | nodes.Tuple):
                    out = out | self._element(item, depth + 1)
            return out
        if isinstance(iterable, nodes.Dict):
            out = _Origin()
            for pair in iterable.items:
                out = out | self.origin(pair.key, depth + 1) | self.origin(pair.value, depth + 1)
            return out
        inner = self.origin(iterable, depth + 1)
        if inner.data and not inner.built and not inner.consts:
            return _DATA
        out = _BUILT if inner.built or inner.data else _Origin()
        for value in inner.consts:
            if isinstance(value, str | list | tuple):
                out = out | _Origin(frozenset(v for v in value if isinstance(v, str)))
            else:
                out = out | _BUILT
        return out

    def _fold(self, expr: Any, depth: int) -> _Origin | None:
        """The constant values ``expr`` evaluates to, when every input is a constant."""
        try:
            values = self._fold_values(expr, depth)
        except _NotConstant:
            return None
        return _Origin(frozenset(values))

    def _single(self, expr: Any, depth: int) -> list[Any]:
        origin = self.origin(expr, depth + 1)
        if origin.data or origin.built or not origin.consts or len(origin.consts) > 16:
            raise _NotConstant
        return list(origin.consts)

    def _fold_values(self, expr: Any, depth: int) -> list[Any]:
        nodes = self.nodes
        out: list[Any] = []
        if isinstance(expr, nodes.Concat):
            results = [""]
            for part in expr.nodes:
                results = [r + str(v) for r in results for v in self._single(part, depth)]
                if len(results) > 16:
                    raise _NotConstant
            return results
        if isinstance(expr, nodes.Add | nodes.Mul | nodes.Mod):
            for left in self._single(expr.left, depth):
                for right in self._single(expr.right, depth):
                    try:
                        if isinstance(expr, nodes.Add):
                            value = left + right
                        elif isinstance(expr, nodes.Mul):
                            if (isinstance(right, int) and right > _MAX_FOLD) or (isinstance(
                                    left, int) and left > _MAX_FOLD):
                                raise _NotConstant
                            value = left * right
                        else:
                            value = left % right
                    except (TypeError, ValueError, OverflowError) as exc:
                        raise _NotConstant from exc
                    out.append(value)
            return out
        if isinstance(expr, nodes.List | nodes.Tuple):
            if len(expr.items) > 64:
                raise _NotConstant
            combos: list[list[Any]] = [[]]
            for item in expr.items:
                combos = [[*c, v] for c in combos for v in self._single(item, depth)]
                if len(combos) > 16:
                    raise _NotConstant
            return [tuple(c) for c in combos]
        if isinstance(expr, nodes.Getitem) and isinstance(expr.arg, nodes.Slice):
            for base in self._single(expr.node, depth):
                bounds = [self._single(b, depth)[0] if b is not None else None
                          for b in (expr.arg.start, expr.arg.stop, expr.arg.step)]
                try:
                    out.append(base[slice(*bounds)])
                except (TypeError, ValueError, IndexError) as exc:
                    raise _NotConstant from exc
            return out
        if isinstance(expr, nodes.Getitem):
            for base in self._single(expr.node, depth):
                for key in self._single(expr.arg, depth):
                    try:
                        out.append(base[key])
                    except (TypeError, KeyError, IndexError) as exc:
                        raise _NotConstant from exc
            return out
        if isinstance(expr, nodes.Filter) and expr.name in _FOLDABLE_FILTERS and (
            expr.node is not None and expr.dyn_args is None and expr.dyn_kwargs is None
            and not expr.kwargs
        ):
            for base in self._single(expr.node, depth):
                args = [self._single(a, depth) for a in expr.args]
                for combo in _product(args):
                    out.append(_apply(expr.name, base, combo))
            return out
        if isinstance(expr, nodes.Call) and isinstance(expr.node, nodes.Getattr) and (
            expr.node.attr in _FOLDABLE_FILTERS | {"format", "strip", "lstrip", "rstrip"}
            and not expr.kwargs and expr.dyn_args is None and expr.dyn_kwargs is None
        ):
            for base in self._single(expr.node.node, depth):
                args = [self._single(a, depth) for a in expr.args]
                for combo in _product(args):
                    out.append(_apply_method(expr.node.attr, base, combo))
            return out
        raise _NotConstant

    # -- checks ----------------------------------------------------------------------------------
    def _report(self, dangerous: bool, subject: str, message: str) -> None:
        known = self.verdicts.get(subject)
        if known is None or (dangerous and not known.dangerous):
            self.verdicts[subject] = TemplateVerdict(dangerous, subject, message)

    def _check_name_expr(self, expr: Any, what: str, *, dotted: bool = False,
                         data_allowed: bool = False) -> None:
        """A computed attribute name: dangerous unless every value it can take is harmless
        (for subscripts, a key taken from the caller's data is the caller's business)."""
        origin = self.origin(expr)
        if origin.built or (origin.data and not data_allowed):
            self._report(True, f"<computed {what}>",
                         f"the template computes the name of an attribute it reads ({what}): "
                         "it can reach any attribute, Python internals included")
            return
        for value in origin.consts:
            if isinstance(value, str) and _is_bad_name(value, dotted=dotted):
                self._report(True, value, f"the template reads the Python internal attribute "
                             f"{value!r} ({what}): Jinja template injection (CVE-2024-34359)")

    def check(self) -> list[TemplateVerdict]:
        nodes = self.nodes
        for node in self.template.find_all(nodes.Node):
            if isinstance(node, nodes.Getattr):
                if _is_bad_name(node.attr):
                    self._report(True, node.attr, f"the template reads the Python internal "
                                 f"attribute {node.attr!r}: Jinja template injection "
                                 "(CVE-2024-34359)")
            elif isinstance(node, nodes.Getitem) and not isinstance(node.arg, nodes.Slice):
                origin = self.origin(node.arg)
                if origin.built or any(isinstance(v, str) for v in origin.consts):
                    self._check_name_expr(node.arg, "subscript", data_allowed=True)
            elif isinstance(node, nodes.Filter | nodes.Test) and node.name is not None:
                self._check_filter(node)
            elif isinstance(node, nodes.Call):
                self._check_call(node)
            elif isinstance(node, nodes.Include | nodes.Import | nodes.FromImport
                            | nodes.Extends):
                self._report(False, "<template loader>",
                             "the template loads another template (chat templates are rendered "
                             "without a loader)")
        return list(self.verdicts.values())

    def _check_filter(self, node: Any) -> None:
        if node.name in _ATTRIBUTE_FILTERS:
            index, keyword = _ATTRIBUTE_FILTERS[node.name]
            if node.dyn_args is not None or node.dyn_kwargs is not None:
                self._report(True, f"<computed {node.name}>",
                             f"{node.name} with computed arguments: it can name any attribute")
            if index is not None and len(node.args) > index:
                self._check_name_expr(node.args[index], f"{node.name} filter",
                                      dotted=node.name != "attr")
            for kw in node.kwargs:
                if kw.key == keyword:
                    self._check_name_expr(kw.value, f"{node.name}(attribute=...)", dotted=True)
        if node.name in _APPLYING_FILTERS and node.args:
            applied = self.origin(node.args[0])
            if applied.built or applied.data or any(
                v in _ATTRIBUTE_FILTERS for v in applied.consts
            ):
                if applied.built or applied.data:
                    self._report(True, f"<computed {node.name}>",
                                 f"{node.name} applies a filter whose name is computed")
                elif len(node.args) > 1:
                    self._check_name_expr(node.args[1], f"{node.name} with attr", dotted=True)
                else:
                    self._report(True, f"<computed {node.name}>",
                                 f"{node.name} applies an attribute filter without a name")

    def _check_call(self, node: Any) -> None:
        nodes = self.nodes
        func = node.node
        if isinstance(func, nodes.Getattr) and func.attr in ("format", "format_map"):
            base = self.origin(func.node)
            if base.built or base.data:
                self._report(True, "<computed format string>",
                             "str.format with a format string the template does not spell out "
                             "(format fields can read attributes)")
            for value in base.consts:
                if isinstance(value, str) and _format_reaches_attributes(value):
                    self._report(True, "<format attribute access>",
                                 f"str.format string {value[:60]!r} reads attributes or items "
                                 "of its arguments")


class _NotConstant(Exception):
    pass


def _product(lists: list[list[Any]]) -> Iterator[list[Any]]:
    combos: list[list[Any]] = [[]]
    for options in lists:
        combos = [[*c, v] for c in combos for v in options]
        if len(combos) > 16:
            raise _NotConstant
    yield from combos


def _apply(name: str, base: Any, args: list[Any]) -> Any:
    try:
        if name == "lower":
            return str(base).lower()
        if name == "upper":
            return str(base).upper()
        if name in ("string",):
            return str(base)
        if name == "trim":
            return str(base).strip(*args[:1])
        if name == "capitalize":
            return str(base).capitalize()
        if name == "title":
            return str(base).title()
        if name == "reverse":
            return base[::-1] if isinstance(base, str) else tuple(reversed(base))
        if name == "join":
            return str(args[0] if args else "").join(str(v) for v in base)
        if name == "replace":
            if len(str(base)) * max(len(str(args[1])), 1) > (1 << 16):
                raise _NotConstant
            return str(base).replace(str(args[0]), str(args[1]), *args[2:3])
        if name in ("first", "last"):
            return base[0] if name == "first" else base[-1]
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise _NotConstant from exc
    raise _NotConstant


def _apply_method(name: str, base: Any, args: list[Any]) -> Any:
    if not isinstance(base, str):
        raise _NotConstant
    if name == "format":
        if _format_reaches_attributes(base):
            raise _NotConstant
        try:
            return base.format(*args)
        except (IndexError, KeyError, ValueError) as exc:
            raise _NotConstant from exc
    if name in ("strip", "lstrip", "rstrip"):
        return getattr(base, name)(*args[:1])
    return _apply(name, base, args)


def _format_reaches_attributes(fmt: str) -> bool:
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return True
    for _, field, spec, _ in fields:
        if field and ("." in field or "[" in field):
            return True
        if spec and "{" in spec:
            return True
    return False


def judge_template(source: str) -> list[TemplateVerdict]:
    """Every dangerous or unknown construct of a chat template (empty: nothing found).

    Raises ``ValueError`` with a one-line reason when Jinja2 cannot parse it.
    """
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension

    class _Generation(Extension):
        """``{% generation %}`` (Hugging Face's marker of assistant turns): parsed, no effect."""

        tags = {"generation"}  # noqa: RUF012 - Jinja's extension API

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    environment = jinja2.Environment(  # noqa: S701 - parsed only, never rendered
        extensions=["jinja2.ext.loopcontrols", "jinja2.ext.do", _Generation],
    )
    try:
        template = environment.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"chat template does not parse: {exc.message} (line {exc.lineno})"
                         ) from exc
    except (RecursionError, MemoryError) as exc:
        raise ValueError("chat template nested too deeply to parse") from exc
    try:
        return _Judge(template).check()
    except RecursionError as exc:
        raise ValueError("chat template nested too deeply to check") from exc
