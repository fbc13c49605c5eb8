"""Render the Helm chart in deploy/helm/ without Helm (it cannot be installed here).

A small interpreter of exactly the Go-template subset the chart uses, with Helm's
meaning: actions ``if``/``else if``/``else``, ``with``, ``range`` (over lists and over
maps in key order, with ``$key, $value :=``), ``define``/``include``, the trim markers
``{{-`` and ``-}}``, pipelines and parenthesised calls, ``.``/``$`` and ``.Values``,
``.Release``, ``.Chart`` fields, and the functions in :data:`FUNCTIONS`. Anything else
(another function, action or syntax) raises :class:`Unsupported`, so a chart edit that
leaves this subset fails the tests instead of being rendered wrongly.
What it does not reproduce: Helm's schema checks, lookups, hooks, and the Kubernetes API
server's own validation. ``--set`` strings are typed as Helm types them (bool, int, else
string).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


class Unsupported(Exception):
    """Template syntax or a function outside the supported subset."""


class RenderError(Exception):
    """``fail`` or ``required`` in the chart: what ``helm template`` reports as an error."""


ACTION = re.compile(r"\{\{(-?)(\s*)(.*?)(\s*)(-?)\}\}", re.S)
TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+)|(?P<lp>\()|(?P<rp>\))|(?P<pipe>\|)'
    r"|(?P<assign>:=)|(?P<comma>,)|(?P<field>(?:\$[A-Za-z_]\w*|\$)?(?:\.[A-Za-z_]\w*)+|\.)"
    r"|(?P<var>\$[A-Za-z_]\w*|\$)|(?P<ident>[A-Za-z_]\w*))"
)


def truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, (str, list, dict, tuple)):
        return len(value) > 0
    if isinstance(value, (int, float)):
        return value != 0
    return True


def to_yaml(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=False, sort_keys=True)
    if text.endswith("...\n"):
        text = text[: -len("...\n")]
    return text.rstrip("\n")


def go_string(value: Any) -> str:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def indent(spaces: int, text: str) -> str:
    pad = " " * spaces
    return "\n".join(pad + line for line in go_string(text).split("\n"))


def required(message: str, value: Any) -> Any:
    if not truthy(value):
        raise RenderError(message)
    return value


def fail(message: str) -> Any:
    raise RenderError(message)


def default(fallback: Any, value: Any = None) -> Any:
    return value if truthy(value) else fallback


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "default": default,
    "trunc": lambda n, s: go_string(s)[:n],
    "trimSuffix": lambda suffix, s: go_string(s).removesuffix(suffix),
    "printf": lambda fmt, *args: fmt.replace("%s", "{}").format(*map(go_string, args)),
    "quote": lambda s: json.dumps(go_string(s)),
    "toYaml": to_yaml,
    "toJson": lambda v: json.dumps(v, separators=(",", ":"), sort_keys=True),
    "nindent": lambda n, s: "\n" + indent(n, s),
    "indent": indent,
    "b64enc": lambda s: base64.b64encode(go_string(s).encode()).decode(),
    "sha256sum": lambda s: hashlib.sha256(go_string(s).encode()).hexdigest(),
    "required": required,
    "fail": fail,
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "lt": lambda a, b: a < b,
    "not": lambda v: not truthy(v),
    "and": lambda *vs: next((v for v in vs if not truthy(v)), vs[-1]),
    "or": lambda *vs: next((v for v in vs if truthy(v)), vs[-1]),
    "int": lambda v: int(v or 0),
}


# ------------------------------------------------------------------- parsing


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise Unsupported(f"cannot read {text[pos:]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def split_nodes(source: str) -> list[tuple[str, str]]:
    """("text", s) and ("action", body) nodes, the trim markers applied."""
    nodes: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for match in ACTION.finditer(source):
        text = source[pos : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        nodes.append(("text", text))
        nodes.append(("action", match.group(3)))
        trim_next = bool(match.group(5))
        pos = match.end()
    tail = source[pos:]
    nodes.append(("text", tail.lstrip() if trim_next else tail))
    return nodes


def parse(nodes: list[tuple[str, str]], pos: int = 0, until: tuple[str, ...] = ()) -> Any:
    """A list of items: str (text), ("out", expr), ("if", [(cond, body)...], else_body),
    ("with", expr, body, else_body), ("range", vars, expr, body), ("define", name, body)."""
    items: list[Any] = []
    while pos < len(nodes):
        kind, body = nodes[pos]
        pos += 1
        if kind == "text":
            items.append(body)
            continue
        if body.startswith("/*"):
            continue
        word = body.split(None, 1)[0] if body else ""
        rest = body[len(word) :].strip()
        if word in until:
            return items, pos - 1
        if word == "if":
            branches, else_body, pos = parse_branches(nodes, pos, rest)
            items.append(("if", branches, else_body))
        elif word == "with":
            branches, else_body, pos = parse_branches(nodes, pos, rest)
            if len(branches) != 1:
                raise Unsupported("else if inside with")
            items.append(("with", branches[0][0], branches[0][1], else_body))
        elif word == "range":
            variables: list[str] = []
            if ":=" in rest:
                names, rest = rest.split(":=", 1)
                variables = [n.strip() for n in names.split(",")]
            body_items, pos = parse(nodes, pos, ("end",))
            pos += 1
            items.append(("range", variables, tokenize(rest), body_items))
        elif word == "define":
            body_items, pos = parse(nodes, pos, ("end",))
            pos += 1
            items.append(("define", json.loads(rest), body_items))
        elif word in ("end", "else", "block", "template", "break", "continue"):
            raise Unsupported(f"unexpected {word!r}")
        else:
            items.append(("out", tokenize(body)))
    if until:
        raise Unsupported(f"missing {until}")
    return items, pos


def parse_branches(
    nodes: list[tuple[str, str]], pos: int, condition: str
) -> tuple[list[Any], list[Any], int]:
    branches = []
    else_body: list[Any] = []
    while True:
        body, pos = parse(nodes, pos, ("end", "else"))
        branches.append((tokenize(condition), body))
        action = nodes[pos][1]
        pos += 1
        if action == "end":
            return branches, else_body, pos
        rest = action[len("else") :].strip()
        if rest.startswith("if "):
            condition = rest[3:]
            continue
        if rest:
            raise Unsupported(f"else {rest!r}")
        else_body, pos = parse(nodes, pos, ("end",))
        return branches, else_body, pos + 1


# ------------------------------------------------------------------ rendering


class Chart:
    """A chart directory: ``render(values_overrides, set_args)`` -> {template: text}."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta = yaml.safe_load((path / "Chart.yaml").read_text())
        self.defaults = yaml.safe_load((path / "values.yaml").read_text())
        self.templates = {
            p.name: parse(split_nodes(p.read_text()))[0]
            for p in sorted((path / "templates").iterdir())
            if p.suffix in (".yaml", ".tpl", ".txt")
        }
        self.defines: dict[str, list[Any]] = {}
        for items in self.templates.values():
            for item in items:
                if isinstance(item, tuple) and item[0] == "define":
                    self.defines[item[1]] = item[2]

    def values(self, overrides: dict[str, Any] | None, sets: list[str]) -> dict[str, Any]:
        values = copy.deepcopy(self.defaults)
        merge(values, overrides or {})
        for item in sets:
            key, _, raw = item.partition("=")
            target = values
            parts = key.split(".")
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = helm_scalar(raw)
        return values

    def render(
        self,
        overrides: dict[str, Any] | None = None,
        sets: list[str] | None = None,
        release: str = "rel",
    ) -> dict[str, str]:
        root = {
            "Values": self.values(overrides, sets or []),
            "Release": {"Name": release, "Namespace": "default", "Service": "Helm"},
            "Chart": {"Name": self.meta["name"], "AppVersion": self.meta["appVersion"]},
        }
        out = {}
        for name, items in self.templates.items():
            if name.startswith("_"):
                continue
            out[name] = self.run(items, root, {"$": root})
        return out

    def run(self, items: list[Any], dot: Any, variables: dict[str, Any]) -> str:
        parts: list[str] = []
        for item in items:
            if isinstance(item, str):
                parts.append(item)
            elif item[0] == "out":
                parts.append(go_string(self.pipeline(item[1], dot, variables)))
            elif item[0] == "if":
                for condition, body in item[1]:
                    if truthy(self.pipeline(condition, dot, variables)):
                        parts.append(self.run(body, dot, variables))
                        break
                else:
                    parts.append(self.run(item[2], dot, variables))
            elif item[0] == "with":
                value = self.pipeline(item[1], dot, variables)
                if truthy(value):
                    parts.append(self.run(item[2], value, variables))
                else:
                    parts.append(self.run(item[3], dot, variables))
            elif item[0] == "range":
                names, expr, body = item[1], item[2], item[3]
                value = self.pipeline(expr, dot, variables)
                pairs = sorted(value.items()) if isinstance(value, dict) else enumerate(value or [])
                for key, element in pairs:
                    scope = dict(variables)
                    if len(names) == 2:
                        scope[names[0]], scope[names[1]] = key, element
                    elif len(names) == 1:
                        scope[names[0]] = element
                    parts.append(self.run(body, element, scope))
            elif item[0] == "define":
                continue
        return "".join(parts)

    def pipeline(self, tokens: list[tuple[str, str]], dot: Any, variables: dict[str, Any]) -> Any:
        commands: list[list[tuple[str, str]]] = [[]]
        depth = 0
        for token in tokens:
            if token[0] == "pipe" and depth == 0:
                commands.append([])
                continue
            depth += token[0] == "lp"
            depth -= token[0] == "rp"
            commands[-1].append(token)
        value: Any = None
        for n, command in enumerate(commands):
            args = self.arguments(command, dot, variables)
            if n > 0:
                args.append(value)
            value = self.call(args)
        return value

    def arguments(
        self, tokens: list[tuple[str, str]], dot: Any, variables: dict[str, Any]
    ) -> list[Any]:
        """Evaluated words of one command; a function name stays a ``("fn", name)``."""
        args: list[Any] = []
        pos = 0
        while pos < len(tokens):
            kind, text = tokens[pos]
            pos += 1
            if kind == "lp":
                depth, start = 1, pos
                while depth:
                    depth += tokens[pos][0] == "lp"
                    depth -= tokens[pos][0] == "rp"
                    pos += 1
                args.append(self.pipeline(tokens[start : pos - 1], dot, variables))
            elif kind == "str":
                args.append(json.loads(text))
            elif kind == "num":
                args.append(int(text))
            elif kind == "field":
                args.append(self.field(text, dot, variables))
            elif kind == "var":
                args.append(variables[text])
            elif kind == "ident":
                if text in ("true", "false"):
                    args.append(text == "true")
                elif text == "include" or text in FUNCTIONS:
                    args.append(("fn", text))
                else:
                    raise Unsupported(f"function {text!r}")
            else:
                raise Unsupported(f"token {text!r}")
        return args

    def call(self, args: list[Any]) -> Any:
        if not args:
            raise Unsupported("empty command")
        head = args[0]
        if isinstance(head, tuple) and head[:1] == ("fn",):
            name, rest = head[1], args[1:]
            if name == "include":
                template, dot = rest
                return self.run(self.defines[template], dot, {"$": dot})
            return FUNCTIONS[name](*rest)
        if len(args) != 1:
            raise Unsupported(f"not a function: {head!r}")
        return head

    @staticmethod
    def field(text: str, dot: Any, variables: dict[str, Any]) -> Any:
        if text == ".":
            return dot
        base: Any = dot
        path = text
        if text.startswith("$"):
            name, _, path = text.partition(".")
            base = variables[name]
            path = "." + path if path else ""
        for part in filter(None, path.split(".")):
            base = base.get(part) if isinstance(base, dict) else None
        return base


def merge(target: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value


def helm_scalar(raw: str) -> Any:
    if raw in ("true", "false"):
        return raw == "true"
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    return raw


def documents(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every non-empty YAML document of the rendered templates (NOTES.txt excluded)."""
    docs = []
    for name, text in rendered.items():
        if name.endswith(".txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs
