"""Cloud Monitoring's time-series filter language, as far as the emulator accepts it.

Split out of ``controller.emulator.monitoring`` (the gRPC service): a tokenizer and a small
recursive-descent parser for ``metric.type = "..."``, ``resource.type``, label selectors with
``=``/``!=``/``one_of``/``starts_with``/``ends_with``, joined by ``AND`` (see the Monitoring
filters reference cited in docs/fidelity.md). Anything else is refused as the real API refuses it:
INVALID_ARGUMENT or UNIMPLEMENTED, carried by :class:`EmulatorError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc


class _Series(Protocol):
    """What a filter reads of a stored series (``monitoring._Series``)."""

    @property
    def metric_type(self) -> str: ...
    @property
    def metric_labels(self) -> Mapping[str, str]: ...
    @property
    def resource_type(self) -> str: ...
    @property
    def resource_labels(self) -> Mapping[str, str]: ...


class EmulatorError(Exception):
    """A request the emulator rejects; carried to the client as this gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> EmulatorError:
    return EmulatorError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _unimplemented(message: str) -> EmulatorError:
    return EmulatorError(grpc.StatusCode.UNIMPLEMENTED, f"{message} (not supported by this emulator)")


# --------------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>!=|=~|<=|>=|=|<|>|:)
      | (?P<punct>[(),])
      | (?P<minus>-)
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*|[0-9][0-9.]*)
    )""",
    re.VERBOSE,
)
_FUNCTIONS = {"one_of", "starts_with", "ends_with"}
_SELECTOR = re.compile(r"^(metric|resource)\.(?:label|labels)\.([A-Za-z_][A-Za-z0-9_]*)$")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


@dataclass(frozen=True)
class _Clause:
    """``<selector> (=|!=) <matcher>``; selector is ("metric"|"resource", label) or ("resource.type", "")."""

    scope: str  # "metric", "resource", "resource.type"
    label: str
    negate: bool
    function: str  # "eq", "one_of", "starts_with", "ends_with"
    values: tuple[str, ...]
    is_bool: bool = False

    def matches(self, series: _Series) -> bool:
        if self.scope == "resource.type":
            actual = series.resource_type
        elif self.scope == "metric":
            actual = series.metric_labels.get(self.label, "")
        else:
            actual = series.resource_labels.get(self.label, "")
        if self.is_bool:
            actual = actual.lower()
        if self.function == "eq":
            hit = actual == self.values[0]
        elif self.function == "one_of":
            hit = actual in self.values
        elif self.function == "starts_with":
            hit = actual.startswith(self.values[0])
        else:
            hit = actual.endswith(self.values[0])
        return hit != self.negate


@dataclass(frozen=True)
class ParsedFilter:
    """A filter of the supported subset: one ``metric.type = "…"`` plus clauses joined by AND."""

    metric_type: str
    clauses: tuple[_Clause, ...]

    def matches(self, series: _Series) -> bool:
        return series.metric_type == self.metric_type and all(c.matches(series) for c in self.clauses)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise _invalid(f"filter: unexpected character {text[pos:].lstrip()[:1]!r} at offset {pos}")
        kind = m.lastgroup
        assert kind is not None  # one alternative always matched
        tokens.append(_Token(kind, m.group(kind)))
        pos = m.end()
    return tokens


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal[1:-1])


class _FilterParser:
    """Recursive-descent parser over the token list; one instance per filter."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> _Token | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    @staticmethod
    def unsupported(tok: _Token) -> EmulatorError:
        word = tok.text.upper()
        if tok.kind == "word" and word in {"OR", "NOT"}:
            return _invalid(f"filter: the {word} operator is not supported by this emulator")
        if tok.kind == "minus":
            return _invalid("filter: negation with '-' is not supported by this emulator")
        if tok.text == "(":
            return _invalid("filter: parentheses are not supported by this emulator")
        return _invalid(f"filter: unexpected {tok.text!r}")

    def parse(self) -> ParsedFilter:
        if not self.tokens:
            raise _invalid("filter: a filter with a metric.type is required")
        metric_types: list[str] = []
        clauses: list[_Clause] = []
        while True:
            selector, negate, function, values, is_bool = self.comparison()
            if selector == "metric.type":
                if negate or function != "eq":
                    raise _invalid('filter: metric.type must be compared with = "TYPE"')
                metric_types.append(values[0])
            elif selector == "resource.type":
                clauses.append(_Clause("resource.type", "", negate, function, values))
            else:
                m = _SELECTOR.match(selector)
                if not m:
                    raise _invalid(f"filter: the selector {selector!r} is not supported by this emulator")
                clauses.append(_Clause(m.group(1), m.group(2), negate, function, values, is_bool))
            nxt = self.peek()
            if nxt is None:
                break
            if not (nxt.kind == "word" and nxt.text == "AND"):
                raise self.unsupported(nxt)
            self.i += 1
        if len(metric_types) != 1:
            raise _invalid(f"filter: exactly one metric.type is required, found {len(metric_types)}")
        return ParsedFilter(metric_types[0], tuple(clauses))

    def comparison(self) -> tuple[str, bool, str, tuple[str, ...], bool]:
        """``selector (=|!=) value`` → (selector, negate, function, values, is_bool)."""
        tok = self.peek()
        if tok is None:
            raise _invalid("filter: expected a comparison at the end of the filter")
        if tok.kind != "word" or tok.text.upper() in {"OR", "NOT", "AND"}:
            raise self.unsupported(tok)
        op = self.peek(1)
        if op is None or op.kind != "op":
            raise _invalid(f"filter: expected = or != after {tok.text!r}")
        if op.text not in {"=", "!="}:
            raise _invalid(f"filter: the operator {op.text!r} is not supported by this emulator (use = or !=)")
        self.i += 2
        rhs = self.peek()
        if rhs is None:
            raise _invalid(f"filter: missing value after {tok.text} {op.text}")
        if rhs.kind == "word" and self.peek(1) == _Token("punct", "("):
            function, values = self.call(rhs.text)
            return tok.text, op.text == "!=", function, values, False
        self.i += 1
        if rhs.kind == "string":
            return tok.text, op.text == "!=", "eq", (_unquote(rhs.text),), False
        if rhs.kind == "word" and rhs.text.lower() in {"true", "false"}:
            return tok.text, op.text == "!=", "eq", (rhs.text.lower(),), True
        if rhs.kind == "word" and rhs.text[0].isdigit():
            return tok.text, op.text == "!=", "eq", (rhs.text,), False
        raise _invalid(f"filter: unsupported value {rhs.text!r} after {tok.text} {op.text}")

    def call(self, function: str) -> tuple[str, tuple[str, ...]]:
        """``one_of("a", "b")``, ``starts_with("p")``, ``ends_with("s")``."""
        if function not in _FUNCTIONS:
            raise _invalid(f"filter: the function {function}() is not supported by this emulator")
        self.i += 2
        args: list[str] = []
        while True:
            arg, sep = self.peek(), self.peek(1)
            if arg is None or arg.kind != "string":
                raise _invalid(f"filter: {function}() takes quoted strings")
            args.append(_unquote(arg.text))
            self.i += 2
            if sep == _Token("punct", ")"):
                break
            if sep != _Token("punct", ","):
                raise _invalid(f"filter: expected , or ) in {function}()")
        if function != "one_of" and len(args) != 1:
            raise _invalid(f"filter: {function}() takes exactly one string")
        return function, tuple(args)


def parse_filter(text: str) -> ParsedFilter:
    """Parse the supported filter subset; raise INVALID_ARGUMENT naming anything else.

    Supported: ``metric.type = "T"`` (exactly once), ``resource.type``, ``resource.label[s].X``
    and ``metric.label[s].X`` compared with ``=`` or ``!=`` to a quoted string, an unquoted
    ``true``/``false`` (bool labels) or number, or to ``one_of("a", …)``, ``starts_with("p")``,
    ``ends_with("s")``; clauses joined by ``AND``. A missing label compares as "". Not supported
    (INVALID_ARGUMENT naming it): OR, NOT, ``-`` negation, parentheses, ``=~``, ``:``, ``<``/``>``,
    other functions (``monitoring.regex.full_match``, ``has_substring``…), other selectors.
    """
    return _FilterParser(text).parse()
