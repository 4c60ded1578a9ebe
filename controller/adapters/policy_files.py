"""Policy files: loading the YAML under ``policies/`` with line-numbered errors, and the JSON Schema.

* **Loading** (``load_policies``, ``load_policy_paths``): a file or the top
  level of a directory (``*.yaml``/``*.yml``; sub-directories such as ``examples/`` are *not*
  read, so examples can sit beside live policies without becoming live). A file holds one
  policy per YAML document (``---``), or a document that is a list of policies. Every problem
  in the whole set is reported at once, each as ``file:line:col: dotted.path: message``.
* **Runtime** (``load_for_runtime``): what the function loads; an invalid set is a temporary
  error so alerts are not acknowledged unjudged.
* **JSON Schema** (``policy_json_schema``) for editors, exported to ``deploy/policy.schema.json``.

The models and the matching they feed are in ``controller.policy``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import GenerateJsonSchema

from controller.core.durations import format_duration
from controller.core.errors import PolicyError, TemporaryError
from controller.core.policy import Policy
from controller.core.policy_matching import PolicySet, match_key

# ---------------------------------------------------------------------------------------------
# Loading (reads files; everything else here is pure)
# ---------------------------------------------------------------------------------------------

ENV_POLICIES = "ROLLBACK_POLICIES"
# The repository root's policies/ — beside main.py in the deployed function's source.
DEFAULT_POLICY_PATH = Path(__file__).resolve().parents[2] / "policies"  # the repository root
POLICY_SUFFIXES = (".yaml", ".yml")


def policy_path(environ: Mapping[str, str]) -> Path:
    """``ROLLBACK_POLICIES`` when set and non-empty, else the shipped ``policies/`` directory."""
    value = environ.get(ENV_POLICIES, "").strip()
    return Path(value) if value else DEFAULT_POLICY_PATH


@dataclass(frozen=True)
class _Problem:
    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyLoadError(PolicyError):
    """Invalid policies. ``problems`` holds one ``file:line:col: path: message`` line per problem."""

    def __init__(self, problems: Sequence[str]):
        self.problems = tuple(problems)
        count = len(self.problems)
        super().__init__(
            f"{count} problem{'s' if count != 1 else ''} in rollback policies:\n"
            + "\n".join(f"  {p}" for p in self.problems)
        )


@dataclass
class _Loaded:
    policy: Policy
    file: str
    node: yaml.Node

    def at(self, key: str) -> tuple[int, int]:
        node = _locate(self.node, (key,))
        return node.start_mark.line + 1, node.start_mark.column + 1


def _render_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        else:
            out += f".{part}" if out else part
    return out


def _locate(node: yaml.Node, loc: Sequence[int | str]) -> yaml.Node:
    """The node an error ``loc`` points at: a mapping entry's *key*, a sequence item, or the
    nearest existing parent when the path does not exist (e.g. a missing required key)."""
    best = node
    current: yaml.Node = node
    for part in loc:
        if isinstance(current, yaml.MappingNode) and isinstance(part, str):
            for key_node, value_node in current.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                    best, current = key_node, value_node
                    break
            else:
                return best
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(current.value):
                return best
            best = current = current.value[part]
        else:
            return best
    return best


def _model_keys(loc: Sequence[int | str]) -> list[str]:
    """The keys the model at ``loc`` accepts (for did-you-mean on unknown keys)."""
    model: type[BaseModel] = Policy
    for part in loc:
        info = model.model_fields.get(str(part)) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        if info is None:
            return []
        candidates = [info.annotation, *get_args(info.annotation)]
        nested = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nested is None:
            return []
        model = nested
    return [f.alias or name for name, f in model.model_fields.items()]


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden" and loc:
        allowed = _model_keys(loc[:-1])
        text = f"unknown key {loc[-1]!r}"
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            return f"{text}; did you mean {close[0]!r}?"
        return f"{text}; expected one of: {', '.join(allowed)}" if allowed else text
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch" and tuple(loc) == ("name",):
        return "a policy name is lowercase letters, digits, '_', '.' and '-', starting with a letter or digit"
    msg = str(error["msg"]).removeprefix("Value error, ")
    if kind == "less_than" and loc and loc[-1] == "above":
        # The commonest slip: a percentage where a ratio is meant.
        value = error.get("input")
        if isinstance(value, int | float) and 1 <= value <= 100:
            return f"{msg} (a ratio: {value / 100:g} means {value:g}%)"
        return f"{msg} (a ratio: 0.05 means 5%)"
    return msg


def _duplicate_keys(node: yaml.Node, file: str, prefix: tuple[int | str, ...]) -> list[_Problem]:
    """YAML quietly keeps the last of two equal keys; a policy file never means that."""
    problems: list[_Problem] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            name = key_node.value
            if name in first:
                mark = key_node.start_mark
                problems.append(
                    _Problem(
                        file,
                        mark.line + 1,
                        mark.column + 1,
                        _render_loc((*prefix, name)),
                        f"duplicate key {name!r} (first at line {first[name].start_mark.line + 1})",
                    )
                )
            else:
                first[name] = key_node
            problems += _duplicate_keys(value_node, file, (*prefix, name))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicate_keys(item, file, (*prefix, index))
    return problems


def _problem_at(file: str, node: yaml.Node, path: str, message: str) -> _Problem:
    return _Problem(file, node.start_mark.line + 1, node.start_mark.column + 1, path, message)


def _validate_document(file: str, node: yaml.Node, data: Any, loaded: list[_Loaded], problems: list[_Problem]) -> None:
    if data is None:
        return  # an empty document (a lone comment, a trailing ---) is not an error
    if isinstance(data, list) and isinstance(node, yaml.SequenceNode):
        items = list(zip(node.value, data, strict=True))
    else:
        items = [(node, data)]
    for item_node, item in items:
        if not isinstance(item, dict):
            problems.append(
                _problem_at(
                    file,
                    item_node,
                    "",
                    f"a policy must be a mapping of keys (name, match, triggers, ...), not {type(item).__name__}",
                )
            )
            continue
        dupes = _duplicate_keys(item_node, file, ())
        problems += dupes
        try:
            # by_name=False: YAML speaks the aliases ("for"), never Python's "for_".
            policy = Policy.model_validate(item, by_alias=True, by_name=False)
        except ValidationError as exc:
            for error in exc.errors():
                loc = error["loc"]
                problems.append(
                    _problem_at(file, _locate(item_node, loc), _render_loc(loc) or "(policy)", _message(error))
                )
            continue
        if not dupes:
            loaded.append(_Loaded(policy, file, item_node))


def _load_file(path: Path, file: str, loaded: list[_Loaded], problems: list[_Problem]) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(_Problem(file, 0, 0, "", f"cannot read: {exc}"))
        return
    loader = yaml.SafeLoader(text)
    try:
        # compose + construct by hand (what safe_load_all does inside) to keep each
        # document's node tree: it maps validation errors back to lines and columns.
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # check_node() said there is one; keeps the type checker honest
                break
            data = loader.construct_document(node)
            _validate_document(file, node, data, loaded, problems)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = f"YAML syntax error: {exc.problem or exc.context}"
        if mark is None:
            problems.append(_Problem(file, 0, 0, "", message))
        else:
            problems.append(_Problem(file, mark.line + 1, mark.column + 1, "", message))
    except yaml.YAMLError as exc:
        problems.append(_Problem(file, 0, 0, "", f"YAML error: {exc}"))
    finally:
        loader.dispose()


def _policy_files(path: Path, shown: str, problems: list[_Problem]) -> list[tuple[Path, str]]:
    if path.is_dir():
        # Top level only: examples/ and other sub-directories are documentation, not live policy.
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix in POLICY_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            problems.append(_Problem(shown, 0, 0, "", "no policy files (*.yaml, *.yml) here"))
        return [(p, str(Path(shown) / p.name)) for p in files]
    if path.is_file():
        return [(path, shown)]
    problems.append(_Problem(shown, 0, 0, "", "no such file or directory"))
    return []


def _cross_checks(loaded: Sequence[_Loaded]) -> list[_Problem]:
    """Checks across the whole set: unique names, and no two identical match blocks (a tie
    between them could only be broken arbitrarily, so one of them is a mistake)."""
    problems: list[_Problem] = []
    by_name: dict[str, _Loaded] = {}
    by_match: dict[Any, _Loaded] = {}
    for item in loaded:
        name = item.policy.name
        if name in by_name:
            first = by_name[name]
            line, col = item.at("name")
            fl, fc = first.at("name")
            problems.append(
                _Problem(
                    item.file,
                    line,
                    col,
                    "name",
                    f"duplicate policy name {name!r} (first defined at {first.file}:{fl}:{fc})",
                )
            )
            continue
        by_name[name] = item
        key = match_key(item.policy.match)
        if key in by_match:
            other = by_match[key]
            line, col = item.at("match")
            ol, oc = other.at("match")
            problems.append(
                _Problem(
                    item.file,
                    line,
                    col,
                    "match",
                    f"policy {name!r} has the same match as policy {other.policy.name!r} "
                    f"({other.file}:{ol}:{oc}); neither is more specific, so narrow or merge them",
                )
            )
            continue
        by_match[key] = item
    return problems


def load_policy_paths(paths: Iterable[str | Path]) -> PolicySet:
    """Load files and directories as one set (as if they sat in one directory).

    Raises ``PolicyLoadError`` (a ``PolicyError``) listing every problem, sorted by file,
    line and column.
    """
    given_paths = [str(p) for p in paths]
    loaded: list[_Loaded] = []
    problems: list[_Problem] = []
    file_order: dict[str, int] = {}
    for given in given_paths:
        for path, shown in _policy_files(Path(given), str(given), problems):
            file_order.setdefault(shown, len(file_order))
            _load_file(path, shown, loaded, problems)
    problems += _cross_checks(loaded)
    if not loaded and not problems:
        # An empty set would make the controller ignore every alert: say so loudly.
        problems.append(_Problem(", ".join(given_paths), 0, 0, "", "no policies found"))
    if problems:
        problems.sort(key=lambda p: (file_order.get(p.file, -1), p.line, p.col))
        raise PolicyLoadError([str(p) for p in problems])
    origins = {
        item.policy.name: f"{item.file}:{item.node.start_mark.line + 1}:{item.node.start_mark.column + 1}"
        for item in loaded
    }
    return PolicySet((item.policy for item in loaded), origins)


def load_policies(path: str | Path) -> PolicySet:
    """Load a policy file, or the ``*.yaml``/``*.yml`` files at the top level of a directory."""
    return load_policy_paths([path])


def load_for_runtime(path: str | Path) -> PolicySet:
    """Load the live policy set for the function. An invalid set is a *temporary* error: the
    controller must not acknowledge alerts it could not judge, so Pub/Sub keeps them until the
    files are fixed (and a scheduler tick fails loudly instead of silently doing nothing)."""
    try:
        return load_policies(path)
    except PolicyError as exc:
        raise TemporaryError(f"rollback policies at {path} are invalid: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# JSON Schema
# ---------------------------------------------------------------------------------------------


class _YamlDefaults(GenerateJsonSchema):
    """Show duration defaults as people write them (``2m``), not as ISO 8601 (``PT2M``)."""

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of one policy document, keys by their YAML names (``for``)."""
    schema = Policy.model_json_schema(by_alias=True, mode="validation", schema_generator=_YamlDefaults)
    schema.pop("title", None)
    schema.pop("description", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Cloud Run rollback policy",
        "description": (
            "One policy document of the Cloud Run rollback controller (policies/*.yaml). "
            "Durations are a whole number and a unit: 90s, 2m, 1h, 1d. "
            "Reference: docs/policies.md."
        ),
        **schema,
    }
