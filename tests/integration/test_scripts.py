"""``scripts/test.sh`` and ``scripts/run.sh`` before they install anything: the Python version is
checked first with a clear message, ``.venv`` is recreated when ``PYTHON`` names another
interpreter, the first install says what it does, and a failing install shows pip's output.

Run on a copy of ``scripts/`` with stand-in interpreters (shell scripts answering the scripts'
questions), so nothing is installed and no network is used."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _fake_python(path: Path, identity: str, *, venv_python: Path | None = None) -> Path:
    """A stand-in interpreter: ``-c`` prints ``identity`` ("3.12.1 /opt/py/bin/python3.12"),
    ``-m venv DIR`` installs ``venv_python`` as DIR/bin/python, ``-m pip`` fails like pip offline."""
    venv = f'mkdir -p "$3/bin" && cp {venv_python} "$3/bin/python"' if venv_python else "exit 1"
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-c" ]; then echo "{identity}"; exit 0; fi\n'
        f'if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then {venv}; exit $?; fi\n'
        'if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then\n'
        '  echo "ERROR: Could not find a version that satisfies the requirement pytest==9.2.0" >&2; exit 1\n'
        "fi\n"
        "exit 3\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    return repo


def _run(repo: Path, script: str, python: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(repo), "PYTHON": str(python), "CI": "true"}
    return subprocess.run(
        ["bash", f"scripts/{script}"],
        cwd=repo,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("script", ["test.sh", "run.sh"])
def test_an_old_python_is_refused_first_with_a_clear_message(checkout: Path, tmp_path: Path, script: str) -> None:
    old = _fake_python(tmp_path / "python3.9", "3.9.18 /usr/bin/python3.9")
    done = _run(checkout, script, old)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: Python 3.11 or newer is needed; {old} is Python 3.9.18 (set PYTHON=/path/to/python3.11)"
    )
    assert not (checkout / ".venv").exists()


def test_a_missing_python_is_named(checkout: Path, tmp_path: Path) -> None:
    done = _run(checkout, "test.sh", tmp_path / "no-such-python")
    assert done.returncode == 1
    assert "not found: install Python 3.11 or newer" in done.stderr


def test_venv_is_recreated_for_another_python_and_a_failed_install_is_shown(checkout: Path, tmp_path: Path) -> None:
    old_venv = checkout / ".venv" / "bin"
    old_venv.mkdir(parents=True)
    _fake_python(old_venv / "python", "3.11.7 /usr/bin/python3.11")
    inner = _fake_python(tmp_path / "venv-python", "3.12.1 /opt/py/bin/python3.12")
    new = _fake_python(tmp_path / "python3.12", "3.12.1 /opt/py/bin/python3.12", venv_python=inner)
    done = _run(checkout, "test.sh", new)
    assert done.returncode == 1
    assert done.stdout.splitlines()[:2] == [
        "recreating .venv: it was made by /usr/bin/python3.11 (Python 3.11.7); "
        "PYTHON is /opt/py/bin/python3.12 (Python 3.12.1)",
        "installing dependencies into .venv (first run, a minute or two)…",
    ]
    assert "Could not find a version that satisfies the requirement pytest==9.2.0" in done.stderr  # not hidden
    assert "error: pip install -r requirements-dev.txt failed (output above)" in done.stderr
    assert (checkout / ".venv" / "bin" / "python").read_text() == inner.read_text()
