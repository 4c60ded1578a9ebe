"""The Terraform module under deploy/terraform, parsed without Terraform or the Google provider.

``terraform validate`` needs the provider, which cannot be downloaded here; python-hcl2 parses the
``.tf`` files, ``json`` the ``.tf.json`` ones, and this module gives the tests one view of both:
every resource, data source, variable, local and output, with string literals unquoted and
expressions kept as ``${...}`` text, plus the references each expression makes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "deploy" / "terraform"

# Names Terraform itself provides (each.key, count.index, path.module, self.x, terraform.workspace).
BUILTIN_ROOTS = frozenset({"each", "count", "path", "self", "terraform"})
PROVIDER_PREFIXES = ("google_", "archive_")

_REF = re.compile(r"(?<![\w.\"-])([A-Za-z_][\w-]*)\.([A-Za-z_][\w-]*)(?:\.([A-Za-z_][\w-]*))?")


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals quoted ('"zip"'); expressions are '${...}'."""
    if isinstance(value, str):
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            return value[1:-1]
        return value
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k not in ("__is_block__", "__comments__")}
    return value


def strings(value: Any) -> Iterator[str]:
    """Every string anywhere in ``value`` (keys of maps included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def expressions(text: str) -> list[str]:
    """The ``${...}`` parts of a string (nested braces balanced); ``$${`` is a literal, not one."""
    out: list[str] = []
    i = 0
    while True:
        start = text.find("${", i)
        if start < 0:
            return out
        if start > 0 and text[start - 1] == "$":
            i = start + 2
            continue
        depth, j = 0, start + 1
        while j < len(text):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        out.append(text[start + 2 : j])
        i = j + 1


@dataclass(frozen=True)
class Ref:
    kind: str  # var | local | data | resource | module | other
    address: str  # var.x, local.x, data.T.N, T.N
    where: str


@dataclass
class Module:
    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    data: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_: str) -> dict[str, dict[str, Any]]:
        return {name: body for (t, name), body in self.resources.items() if t == type_}

    def references(self) -> list[Ref]:
        found: list[Ref] = []
        for filename, doc in self.files.items():
            for text in strings(doc):
                for expr in expressions(text):
                    found += _refs(expr, filename)
        return found


def _refs(expr: str, where: str) -> list[Ref]:
    # String literals inside an expression ("project/${each.value}") hold no references of their
    # own, except in their own ${...} parts.
    inner = [r for part in re.findall(r'"([^"]*)"', expr) for e in expressions(part) for r in _refs(e, where)]
    bare = re.sub(r'"[^"]*"', '""', expr)
    out = list(inner)
    for match in _REF.finditer(bare):
        root, second, third = match.groups()
        if root == "var":
            out.append(Ref("var", f"var.{second}", where))
        elif root == "local":
            out.append(Ref("local", f"local.{second}", where))
        elif root == "data":
            out.append(Ref("data", f"data.{second}.{third}", where))
        elif root == "module":
            out.append(Ref("module", f"module.{second}", where))
        elif root.startswith(PROVIDER_PREFIXES):
            out.append(Ref("resource", f"{root}.{second}", where))
    return out


def _blocks(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = doc.get(key, [])
    return value if isinstance(value, list) else [value]


def _add(module: Module, doc: dict[str, Any]) -> None:
    for block in _blocks(doc, "resource"):
        for type_, named in block.items():
            for name, body in named.items():
                module.resources[(type_, name)] = body
    for block in _blocks(doc, "data"):
        for type_, named in block.items():
            for name, body in named.items():
                module.data[(type_, name)] = body
    for block in _blocks(doc, "variable"):
        module.variables.update(block)
    for block in _blocks(doc, "output"):
        module.outputs.update(block)
    for block in _blocks(doc, "locals"):
        module.locals.update({k: v for k, v in block.items() if not k.startswith("__")})


def load(directory: Path = MODULE) -> Module:
    module = Module()
    for path in sorted(directory.glob("*.tf")):
        with path.open() as fh:
            doc = _unquote(hcl2.load(fh))
        module.files[path.name] = doc
        _add(module, doc)
    for path in sorted(directory.glob("*.tf.json")):
        raw = json.loads(path.read_text())
        doc = {k: v for k, v in raw.items() if k != "//"}
        # Terraform JSON nests one object per label; normalise to the hcl2 shape (lists of blocks).
        norm = {k: [v] for k, v in doc.items()}
        module.files[path.name] = norm
        _add(module, norm)
    return module


def first(block: Any) -> dict[str, Any]:
    """A nested block as hcl2 gives it (a one-element list) or as Terraform JSON may (an object)."""
    if isinstance(block, list):
        assert len(block) == 1, block
        block = block[0]
    assert isinstance(block, dict), block
    return block


def env_keys(module: Module, expr: str) -> set[str]:
    """The variable names a function's environment_variables expression sets (through locals)."""
    keys: set[str] = set()
    for ref in re.findall(r"local\.(\w+_env)\b", expr):
        value = module.locals[ref]
        if isinstance(value, dict):
            keys |= set(value)
        else:
            keys |= env_keys(module, value)
    keys |= set(re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", expr))
    return keys
