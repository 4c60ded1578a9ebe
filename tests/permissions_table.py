"""The controller's permissions (deploy/permissions.yaml) as the table in docs/security.md.

deploy/permissions.yaml is the one list: the Terraform module's custom roles read it
(``yamldecode``), deploy/gcloud/install.sh reads it, and docs/security.md shows it between two
markers. ``python tests/permissions_table.py --write`` regenerates the docs table;
tests/deploy/test_deploy_permissions.py fails when any of the three drifts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PERMISSIONS = ROOT / "deploy" / "permissions.yaml"
SECURITY = ROOT / "docs" / "security.md"
BEGIN = "<!-- permissions:begin (generated from deploy/permissions.yaml: python tests/permissions_table.py --write) -->"
END = "<!-- permissions:end -->"


def load(path: Path = PERMISSIONS) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text())["groups"]
    return groups


def names(groups: list[dict[str, Any]]) -> list[str]:
    return [p["name"] for g in groups for p in g["permissions"]]


def table(groups: list[dict[str, Any]]) -> str:
    rows = [
        "| permission | custom role | granted on | API call | why |",
        "| --- | --- | --- | --- | --- |",
    ]
    for group in groups:
        for perm in group["permissions"]:
            rows.append(
                f"| `{perm['name']}` | `{group['role_id']}` | {group['bound_on']} | {perm['api']} | {perm['why']} |"
            )
    return "\n".join(rows)


def section(groups: list[dict[str, Any]]) -> str:
    return f"{BEGIN}\n{table(groups)}\n{END}"


def documented(text: str) -> str:
    """The generated part of docs/security.md (markers included), or '' if the markers are missing."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return ""
    return text[start : end + len(END)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", action="store_true", help="rewrite the table in docs/security.md")
    args = parser.parse_args(argv)
    text = SECURITY.read_text()
    current, wanted = documented(text), section(load())
    if not current:
        print(f"docs/security.md has no {BEGIN!r} ... {END!r} block", file=sys.stderr)
        return 1
    if current == wanted:
        return 0
    if args.write:
        SECURITY.write_text(text.replace(current, wanted))
        return 0
    print(
        "docs/security.md's permissions table differs from deploy/permissions.yaml: run with --write", file=sys.stderr
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
