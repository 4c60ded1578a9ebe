"""The layer contracts (pyproject.toml, checked by ``lint-imports`` in scripts/test.sh) can fail.

Each case copies the package into a temporary tree, adds one import that breaks a rule, and runs
``lint-imports`` there: the contracts must catch it (and pass on the untouched copy).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def run_contracts(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "controller", tmp_path / "controller", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_import(tree: Path, module: str, line: str) -> None:
    path = tree / (module.replace(".", "/") + ".py")
    text = path.read_text()
    marker = "from __future__ import annotations\n"
    path.write_text(text.replace(marker, marker + "\n" + line + "\n", 1))


def test_the_untouched_tree_keeps_every_contract(tree: Path) -> None:
    result = run_contracts(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        pytest.param(
            "controller.core.decide", "import controller.adapters.cloudrun", "Layers", id="core-imports-adapter"
        ),
        pytest.param("controller.core.decide", "import google.cloud.run_v2", "pure core", id="core-imports-client"),
        pytest.param(
            "controller.adapters.cloudrun", "import controller.app.engine", "Layers", id="adapter-imports-app"
        ),
        pytest.param("controller.app.engine", "import controller.surfaces.api", "Layers", id="app-imports-surface"),
        pytest.param(
            "controller.app.engine", "import controller.emulator.cloudrun", "emulators", id="app-imports-emulator"
        ),
        pytest.param("controller.core.state", "import controller.core.decide", "cycles", id="cycle-in-core"),
    ],
)
def test_a_wrong_import_breaks_a_contract(tree: Path, module: str, line: str, broken: str) -> None:
    add_import(tree, module, line)
    result = run_contracts(tree)
    assert result.returncode != 0
    assert any(broken in row and "BROKEN" in row for row in result.stdout.splitlines()), result.stdout
