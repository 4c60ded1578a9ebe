"""One exception root with its retry meaning written down, and one EXIT_USAGE (issue 8 item 5)."""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import controller
from controller.core import errors
from controller.core.errors import EXIT_USAGE, ControllerError, InvalidInput, UsageError
from controller.surfaces import cli

ROOT = Path(__file__).resolve().parent.parent.parent
# Every command-line program: the CLI modules, the emulator's and the demo.
CLI_MODULES = [
    *sorted((ROOT / "controller" / "surfaces").glob("cli*.py")),
    ROOT / "controller" / "surfaces" / "demo.py",
    ROOT / "controller" / "emulator" / "__main__.py",
]


def controller_exceptions() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for info in pkgutil.walk_packages(controller.__path__, "controller."):
        if info.name.startswith("controller.emulator") or info.name == "controller.__main__":
            continue  # the emulators answer to Google, not to the controller's error model
        module = importlib.import_module(info.name)
        for _name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, BaseException):
                found.append(cls)
    return found


def test_every_controller_exception_derives_from_the_one_root() -> None:
    classes = controller_exceptions()
    assert len(classes) >= 20  # the walk found them (not an empty, vacuous pass)
    outside = [f"{cls.__module__}.{cls.__qualname__}" for cls in classes if not issubclass(cls, ControllerError)]
    assert outside == []


def test_every_exception_has_its_retry_meaning_written_down() -> None:
    doc = errors.__doc__ or ""
    undocumented = [cls.__qualname__ for cls in controller_exceptions() if cls.__qualname__ not in doc]
    assert undocumented == []
    for cls in controller_exceptions():
        if cls is not ControllerError:
            assert cls.__doc__ or cls.__qualname__.startswith("_"), f"{cls.__qualname__} says nothing"


def test_human_input_errors_stay_value_errors() -> None:
    # Existing ``except ValueError`` handlers keep catching them.
    assert issubclass(InvalidInput, ValueError) and issubclass(UsageError, ValueError)


@pytest.mark.parametrize("path", CLI_MODULES, ids=lambda p: p.name)
def test_cli_modules_use_the_one_exit_usage(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and any(
            isinstance(t, ast.Name) and t.id == "EXIT_USAGE"
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        )
    ]
    assert own == [], f"{path.name} defines its own EXIT_USAGE (line {own})"
    literal_twos = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant) and node.value.value == 2
    ]
    assert literal_twos == [], f"{path.name} returns a bare 2 (line {literal_twos}): use EXIT_USAGE"


def test_a_usage_error_is_one_line_and_exit_usage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def register(subparsers: cli.Subparsers) -> None:
        parser = subparsers.add_parser("wrong")

        def handler(args: argparse.Namespace) -> int:
            raise UsageError("--thing must be a number: pass --thing 3")

        parser.set_defaults(handler=handler)

    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, register])
    assert cli.main(["wrong"]) == EXIT_USAGE == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"{cli.build_parser().prog} wrong: error: --thing must be a number: pass --thing 3"
    ]
    assert "Traceback" not in captured.err
