"""One list of permissions (deploy/permissions.yaml) behind the custom roles and docs/security.md.

The Terraform module reads the file itself (checked in test_deploy_terraform.py), install.sh reads
it with awk (test_deploy_install.py), and the docs table is generated from it: these tests fail
when the list, the docs or the code's needs drift apart.
"""

from __future__ import annotations

from pathlib import Path

import permissions_table as pt

# What the controller calls, and nothing more (issue 14; DESIGN §9). A permission added to the
# file without a reason in the code shows up here first.
EXPECTED = {
    "run.services.get",
    "run.services.list",
    "run.services.update",
    "run.revisions.get",
    "run.revisions.list",
    "run.operations.get",
    "monitoring.timeSeries.list",
    "pubsub.topics.publish",
    "iam.serviceAccounts.actAs",
    "secretmanager.versions.access",
}


def test_the_list_is_exactly_what_the_controller_uses() -> None:
    names = pt.names(pt.load())
    assert len(names) == len(set(names)), "a permission is listed twice"
    assert set(names) == EXPECTED


def test_project_checked_permissions_are_bound_on_the_project() -> None:
    groups = {g["id"]: g for g in pt.load()}
    project = {p["name"] for p in groups["project"]["permissions"]}
    assert {"run.services.list", "run.operations.get"} <= project
    assert groups["project"]["bound_on"] == "each target project"
    assert {p["name"] for p in groups["actas"]["permissions"]} == {"iam.serviceAccounts.actAs"}
    for group in groups.values():
        assert group["role_id"].startswith("rollbackController") and group["title"]
        for perm in group["permissions"]:
            assert perm["why"] and perm["api"], perm["name"]


def test_docs_security_table_is_generated_from_the_list() -> None:
    text = pt.SECURITY.read_text()
    assert pt.documented(text) == pt.section(pt.load()), "run: python tests/permissions_table.py --write"
    assert pt.main([]) == 0


def test_a_permission_added_to_the_list_alone_makes_the_docs_check_fail(tmp_path: Path) -> None:
    edited = tmp_path / "permissions.yaml"
    edited.write_text(
        pt.PERMISSIONS.read_text().replace(
            "      - name: run.services.get\n",
            "      - name: run.services.delete\n        api: DeleteService\n        why: none\n"
            "      - name: run.services.get\n",
        )
    )
    groups = pt.load(edited)
    assert "run.services.delete" in pt.names(groups)
    assert pt.documented(pt.SECURITY.read_text()) != pt.section(groups)
