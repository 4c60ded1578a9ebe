"""The house rule, enforced: the pure decision core imports no cloud client, no network and no clock.

DESIGN §2: ``controller/core`` (decide, canary, stats, ledger, policy, incident and the other value
modules) is where the intelligence lives; it must be testable with tables alone.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
# Every module of the pure core: the folder is the rule (import-linter's contracts in pyproject.toml
# keep the core from importing the outer layers; this file checks what a contract cannot see).
PURE = sorted(p.stem for p in (ROOT / "controller" / "core").glob("*.py") if p.stem != "__init__")
# Client libraries and HTTP stacks. (``socket`` itself is not listed: the stdlib ``email`` package
# that pydantic uses loads it without any network use.)
FORBIDDEN_MODULES = (
    "google.cloud.run_v2",
    "google.cloud.monitoring_v3",
    "google.api_core",
    "google.auth",
    "slack_sdk",
    "grpc",
    "requests",
    "urllib3",
    "http.client",
    "functions_framework",
)
CLOCK_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("time", "time"),
    ("time", "monotonic"),
}


def _loaded(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


# What a bare interpreter already has (namespace packages that *-nspkg.pth files load at start).
BASELINE = "import json, sys; print(json.dumps(sorted(sys.modules)))"


def test_pure_modules_load_no_client_or_network_library() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {PURE!r}: importlib.import_module('controller.core.' + name)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    loaded = _loaded(code) - _loaded(BASELINE)
    assert sorted(m for m in loaded if m.startswith(FORBIDDEN_MODULES)) == []


@pytest.mark.parametrize("name", PURE)
def test_pure_module_never_reads_the_clock(name: str) -> None:
    tree = ast.parse((ROOT / "controller" / "core" / f"{name}.py").read_text())
    calls = {
        (node.func.value.id, node.func.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
    }
    assert calls & CLOCK_CALLS == set()


def test_main_imports_no_client_library() -> None:
    loaded = _loaded("import json, sys; import main; print(json.dumps(sorted(sys.modules)))")
    heavy = (
        "google.cloud.run_v2",
        "google.cloud.monitoring_v3",
        "google.cloud.pubsub",
        "slack_sdk",
        "grpc",
        "controller",
    )
    assert sorted(m for m in loaded if m.startswith(heavy)) == []


def test_logger_names_do_not_follow_module_paths() -> None:
    """The ``logger`` field of every log line is part of the log format (queries and log-based
    metrics filter on it): a module moved between layers keeps its logger's name."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "controller").rglob("*.py")
        if "emulator" not in path.parts and "getLogger(__name__)" in path.read_text()
    ]
    assert offenders == []
