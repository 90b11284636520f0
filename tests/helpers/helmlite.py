"""`helm template` for the subset of Go templates and Sprint functions that chart/ uses, for tests.

Helm is not installable on this machine (no Debian, PyPI or npm package has it) and no Python library renders
Go templates, so this is hand-written, kept small and strict: an unknown function, keyword or syntax is an
error (so a chart edit that leaves the subset fails the tests instead of rendering wrong), field access on a
missing value fails as in Go, and trimming ({{- -}}), comments, if/else if/else, with, range (with variables),
define/include, pipelines and parentheses behave as in text/template. What the real Helm would add (CRD
handling, hooks, .Capabilities, lookup) is not here: the chart does not use it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class TemplateError(Exception):
    pass


ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
TOKEN = re.compile(r"""\s*(?:("(?:[^"\\]|\\.)*")|(`[^`]*`)|(:=|=|\||\(|\)|,)|(-?\d+(?:\.\d+)?)|(\$[\w]*(?:\.[\w]+)*)"""
                   r"""|(\.(?:[\w]+(?:\.[\w]+)*)?)|([A-Za-z_]\w*))""")


@dataclass
class Node:
    kind: str  # text, action, if, range, with, define, template
    text: str = ""
    branches: list[tuple[str, list[Node]]] = field(default_factory=list)  # (expression, body); "" = else
    names: list[str] = field(default_factory=list)  # range variables


def _lex(source: str) -> list[tuple[str, str]]:
    """[(text), (action)] with trimming applied and comments dropped."""
    parts: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in ACTION.finditer(source):
        text = source[pos:m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        parts.append(("text", text))
        body = m.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            parts.append(("action", body))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = source[pos:]
    parts.append(("text", tail.lstrip() if trim_next else tail))
    return [p for p in parts if p != ("text", "")]


def _parse(parts: list[tuple[str, str]], i: int = 0, stop: tuple[str, ...] = ()) -> tuple[list[Node], int, str]:
    nodes: list[Node] = []
    while i < len(parts):
        kind, body = parts[i]
        i += 1
        if kind == "text":
            nodes.append(Node("text", body))
            continue
        word = body.split(None, 1)[0] if body else ""
        rest = body[len(word):].strip()
        if word in ("end", "else") and stop:
            return nodes, i, body
        if word in ("if", "with", "range"):
            node = Node(word)
            if word == "range" and ":=" in rest:
                names, rest = rest.split(":=", 1)
                node.names = [n.strip() for n in names.split(",")]
            expr = rest.strip()
            while True:
                body_nodes, i, closer = _parse(parts, i, ("end", "else"))
                node.branches.append((expr, body_nodes))
                if closer == "end":
                    break
                expr = closer[len("else"):].strip().removeprefix("if").strip()
                if closer.startswith("else") and expr == "" and node.branches[-1][0] == "":
                    raise TemplateError("two else branches")
            nodes.append(node)
        elif word == "define":
            body_nodes, i, closer = _parse(parts, i, ("end",))
            nodes.append(Node("define", _string(rest), [("", body_nodes)]))
        elif word == "template":
            nodes.append(Node("template", rest))
        elif word in ("end", "else", "block"):
            raise TemplateError(f"unexpected {{{{ {word} }}}}")
        else:
            nodes.append(Node("action", body))
    if stop:
        raise TemplateError("missing {{ end }}")
    return nodes, i, ""


def _string(text: str) -> str:
    text = text.strip()
    if text.startswith('"'):
        return str(yaml.safe_load(text))  # a double-quoted YAML scalar has Go's escapes
    if text.startswith("`"):
        return text[1:-1]
    raise TemplateError(f"expected a string, got {text!r}")


def truthy(value: Any) -> bool:
    return not (value is None or value is False or value == 0 or (hasattr(value, "__len__") and len(value) == 0))


def to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise TemplateError(f"printing a {type(value).__name__} as text: pipe it through toYaml")
    return str(value)


def _indent(n: int, text: Any) -> str:
    pad = " " * int(n)
    return "\n".join(pad + line for line in to_text(text).split("\n"))


def _to_yaml(value: Any) -> str:
    return "" if value is None else yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")


def _printf(fmt: str, *args: Any) -> str:
    return re.sub(r"%[svdq]", "%s", fmt) % tuple(to_text(a) for a in args)


def _required(message: str, value: Any) -> Any:
    if value is None or value == "":
        raise TemplateError(message)
    return value


def _fail(message: str) -> Any:
    raise TemplateError(message)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "toYaml": _to_yaml, "nindent": lambda n, s: "\n" + _indent(n, s), "indent": _indent,
    "quote": lambda *s: " ".join('"' + to_text(x).replace("\\", "\\\\").replace('"', '\\"') + '"' for x in s),
    "default": lambda d, v=None: v if truthy(v) else d, "printf": _printf, "required": _required, "fail": _fail,
    "trunc": lambda n, s: to_text(s)[: int(n)], "trimSuffix": lambda suf, s: to_text(s).removesuffix(suf),
    "lower": lambda s: to_text(s).lower(), "toString": to_text, "int": int, "empty": lambda v: not truthy(v),
    "eq": lambda a, *b: any(a == x for x in b), "ne": lambda a, b: a != b, "gt": lambda a, b: a > b,
    "not": lambda v: not truthy(v), "and": lambda *v: next((x for x in v if not truthy(x)), v[-1]),
    "or": lambda *v: next((x for x in v if truthy(x)), v[-1]), "hasKey": lambda d, k: k in d,
    "contains": lambda sub, s: sub in to_text(s),
    "join": lambda sep, items: sep.join(to_text(i) for i in items), "list": lambda *v: list(v),
    "b64enc": lambda s: base64.b64encode(to_text(s).encode()).decode(),
    "sha256sum": lambda s: hashlib.sha256(to_text(s).encode()).hexdigest(),
}


class Renderer:
    def __init__(self) -> None:
        self.defines: dict[str, list[Node]] = {}

    def load(self, source: str) -> list[Node]:
        nodes, _, _ = _parse(_lex(source))
        for node in nodes:
            if node.kind == "define":
                self.defines[node.text] = node.branches[0][1]
        return [n for n in nodes if n.kind != "define"]

    def render(self, nodes: list[Node], dot: Any, root: Any, scope: dict[str, Any]) -> str:
        out = []
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "action":
                if ":=" in node.text:  # {{ $x := pipeline }}
                    name, expr = node.text.split(":=", 1)
                    scope[name.strip()] = self.pipeline(expr, dot, root, scope)
                else:
                    out.append(to_text(self.pipeline(node.text, dot, root, scope)))
            elif node.kind == "template":
                name, _, expr = node.text.partition(" ")
                out.append(self.include(_string(name), self.pipeline(expr, dot, root, scope) if expr else None))
            else:
                out.append(self.block(node, dot, root, scope))
        return "".join(out)

    def block(self, node: Node, dot: Any, root: Any, scope: dict[str, Any]) -> str:
        for expr, body in node.branches:
            if expr == "":
                return self.render(body, dot, root, dict(scope))
            value = self.pipeline(expr, dot, root, scope)
            if not truthy(value):
                continue
            if node.kind == "if":
                return self.render(body, dot, root, dict(scope))
            if node.kind == "with":
                return self.render(body, value, root, dict(scope))
            items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
            if isinstance(value, dict):
                items.sort()
            parts = []
            for key, item in items:
                inner = dict(scope)
                if len(node.names) == 1:
                    inner[node.names[0]] = item
                elif len(node.names) == 2:
                    inner[node.names[0]], inner[node.names[1]] = key, item
                parts.append(self.render(body, item, root, inner))
            return "".join(parts)
        return ""

    def include(self, name: str, dot: Any) -> str:
        if name not in self.defines:
            raise TemplateError(f"no template named {name!r}")
        return self.render(self.defines[name], dot, dot, {"$": dot})

    # --- expressions ---------------------------------------------------------------------------------------

    def pipeline(self, text: str, dot: Any, root: Any, scope: dict[str, Any]) -> Any:
        tokens = self._tokens(text)
        value, rest = self._pipe(tokens, dot, scope)
        if rest:
            raise TemplateError(f"unexpected {rest[0][1]!r} in {text!r}")
        return value

    def _tokens(self, text: str) -> list[tuple[int, str]]:
        tokens, pos = [], 0
        text = text.strip()
        while pos < len(text):
            m = TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise TemplateError(f"cannot parse {text[pos:]!r}")
            kind = next(i for i in range(1, 8) if m.group(i) is not None)
            tokens.append((kind, m.group(kind)))
            pos = m.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        return tokens

    def _pipe(self, tokens: list[tuple[int, str]], dot: Any, scope: dict[str, Any]) -> tuple[Any, list[Any]]:
        value, tokens = self._command(tokens, dot, scope, piped=None, has_piped=False)
        while tokens and tokens[0] == (3, "|"):
            value, tokens = self._command(tokens[1:], dot, scope, piped=value, has_piped=True)
        return value, tokens

    def _command(self, tokens: list[tuple[int, str]], dot: Any, scope: dict[str, Any], piped: Any,
                 has_piped: bool) -> tuple[Any, list[Any]]:
        if not tokens:
            raise TemplateError("empty command")
        kind, text = tokens[0]
        if kind == 7 and text not in ("true", "false", "nil"):
            args = []
            tokens = tokens[1:]
            while tokens and tokens[0] not in ((3, "|"), (3, ")")):
                arg, tokens = self._operand(tokens, dot, scope)
                args.append(arg)
            if has_piped:
                args.append(piped)
            return self._call(text, args), tokens
        if has_piped:
            raise TemplateError(f"cannot pipe into {text!r}: not a function")
        return self._operand(tokens, dot, scope)

    def _call(self, name: str, args: list[Any]) -> Any:
        if name == "include":
            return self.include(args[0], args[1] if len(args) > 1 else None)
        if name not in FUNCTIONS:
            raise TemplateError(f"function {name!r} not defined (not in the subset this renderer has)")
        return FUNCTIONS[name](*args)

    def _operand(self, tokens: list[tuple[int, str]], dot: Any, scope: dict[str, Any]) -> tuple[Any, list[Any]]:
        kind, text = tokens[0]
        rest = tokens[1:]
        if kind in (1, 2):
            return _string(text), rest
        if kind == 4:
            return (float(text) if "." in text else int(text)), rest
        if kind == 3 and text == "(":
            value, rest = self._pipe(rest, dot, scope)
            if not rest or rest[0] != (3, ")"):
                raise TemplateError("missing )")
            return value, rest[1:]
        if kind == 5:
            name, *path = text.split(".")
            if name not in scope:
                raise TemplateError(f"undefined variable {name}")
            return self._field(scope[name], path, text), rest
        if kind == 6:
            return self._field(dot, [p for p in text.split(".") if p], text), rest
        if kind == 7:
            return {"true": True, "false": False, "nil": None}[text], rest
        raise TemplateError(f"unexpected {text!r}")

    @staticmethod
    def _field(value: Any, path: list[str], text: str) -> Any:
        for i, key in enumerate(path):
            if value is None:
                raise TemplateError(f"nil pointer evaluating {'.'.join(path[:i]) or '.'}.{key} in {text}")
            if not isinstance(value, dict):
                raise TemplateError(f"can't evaluate field {key} in {text}: not a map")
            value = value.get(key)
        return value


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's values coalescing: maps merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def template(chart: Path, values: dict[str, Any] | None = None, release: str = "kube-audit",
             namespace: str = "kube-audit") -> list[dict[str, Any]]:
    """The chart's manifests as `helm template RELEASE CHART -n NAMESPACE -f values` gives them, parsed."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    merged = merge(yaml.safe_load((chart / "values.yaml").read_text()) or {}, values or {})
    root = {"Values": merged, "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
            "Chart": {k[0].upper() + k[1:]: v for k, v in meta.items()}}
    renderer = Renderer()
    for helper in sorted((chart / "templates").glob("_*.tpl")):
        renderer.load(helper.read_text())
    docs = []
    for path in sorted((chart / "templates").glob("*.yaml")):
        text = renderer.render(renderer.load(path.read_text()), root, root, {"$": root})
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                docs.append(doc)
    return docs
