"""The command line as installed and as read: ``--help`` works for every command and subcommand,
``pip install .`` provides ``rollback-controller`` with the same commands as ``python -m controller``,
and the README's synopsis is what the parser accepts."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.surfaces.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))


COMMANDS = sorted(_commands(build_parser()))


def test_every_command_is_listed() -> None:
    names = {c[0] for c in COMMANDS if c}
    assert {"validate", "schema", "demo", "rollback", "undo", "hold", "release", "status", "canary"} <= names
    assert ("canary", "approve") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_works_for_every_command(command: tuple[str, ...]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "controller", *command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m controller")
    assert done.stderr == ""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install .`` of a copy of the project (not editable, no dependencies: they are in this
    interpreter already) into a target directory; returns the ``rollback-controller`` script."""
    work = tmp_path_factory.mktemp("install")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "controller", src / "controller", ignore=shutil.ignore_patterns("__pycache__"))
    target = work / "target"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
    subprocess.run(
        [*pip, "--no-build-isolation", "--no-index", "--target", str(target), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    script = target / "bin" / "rollback-controller"
    assert script.exists(), sorted(p.name for p in (target / "bin").iterdir()) if (target / "bin").exists() else []
    return script


def _run_installed(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(script.parent.parent))
    return subprocess.run(
        [str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_console_script_has_the_same_commands(installed: Path, tmp_path: Path) -> None:
    done = _run_installed(installed, "--help", cwd=tmp_path)  # outside the checkout: the installed copy
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: rollback-controller")
    module = subprocess.run(
        [sys.executable, "-m", "controller", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.replace("rollback-controller", "python -m controller") == module.stdout
    canary = _run_installed(installed, "canary", "gate", "--help", cwd=tmp_path)
    assert canary.returncode == 0 and canary.stdout.startswith("usage: rollback-controller canary gate")
    schema = _run_installed(installed, "schema", cwd=tmp_path)
    assert schema.returncode == 0 and '"$schema"' in schema.stdout


def test_console_script_errors_name_it(installed: Path, tmp_path: Path) -> None:
    env_free = {k: v for k, v in os.environ.items() if not k.startswith(("ROLLBACK_", "GOOGLE_"))}
    done = subprocess.run(
        [str(installed), "status", "checkout", "--region", "europe-west1"],
        cwd=tmp_path,
        env=env_free | {"PYTHONPATH": str(installed.parent.parent)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "rollback-controller status: error: --project is required (GOOGLE_CLOUD_PROJECT is unset)"
    )


def test_readme_synopsis_is_what_the_parser_accepts() -> None:
    readme = (ROOT / "README.md").read_text()
    lines = [line.strip() for line in readme.splitlines() if line.strip().startswith("rollback-controller ")]
    assert lines, "the README shows rollback-controller commands"
    rollbacks = [line for line in lines if line.startswith("rollback-controller rollback ")]
    assert rollbacks and all("--reason" in line for line in rollbacks), rollbacks
    assert not any(re.match(r"rollback-controller status .*--actor", line) for line in lines)
    assert "python -m controller rollback" not in readme
