"""deploy/terraform, checked without Terraform's Google provider (it cannot be downloaded here).

Every .tf / .tf.json file is parsed (python-hcl2, json) and checked for what `terraform validate`
and a reviewer would catch: references that resolve, the functions' contract with main.py and
DESIGN §7 (entry points, runtime, triggers, retry, timeout above the delivery deadline), the
custom roles coming from deploy/permissions.yaml, no public invoker, no secret in a plain
variable, and alert policies that are what the generator writes today.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import tfmodel
import yaml
from tfmodel import MODULE, ROOT, Module, env_keys, first

from controller.adapters.policy_files import load_policy_paths
from controller.core import alertpolicies
from controller.core.alertpolicy_terraform import FILENAME, RESOURCE_TYPE, dumps, to_terraform
from controller.surfaces import cli_alert_policies

FUNCTION = "google_cloudfunctions2_function"
PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
PUBLIC = ("allUsers", "allAuthenticatedUsers")

# DESIGN §7's environment contract, plus the settings the controller reads beyond it.
KNOWN_ENV = frozenset(
    {
        "ROLLBACK_POLICIES",
        "ROLLBACK_RUN_ENDPOINT",
        "ROLLBACK_MONITORING_ENDPOINT",
        "SLACK_BOT_TOKEN",
        "SLACK_CHANNEL",
        "SLACK_WEBHOOK_URL",
        "ROLLBACK_SLACK_API_URL",
        "ROLLBACK_DRY_RUN",
        "GOOGLE_CLOUD_PROJECT",
        "ROLLBACK_AUTH_AUDIENCE",
        "ROLLBACK_ALLOWED_PRINCIPALS",
        "ROLLBACK_AUTH_CERTS_URL",
        "SLACK_SIGNING_SECRET",
        "ROLLBACK_SLACK_ALLOWED_USERS",
        "ROLLBACK_AUTH_TRUST_PLATFORM",
        "ROLLBACK_COMMANDS_TOPIC",
        "ROLLBACK_EVENTS_TOPIC",
        "ROLLBACK_DELIVERY_DEADLINE",
        "ROLLBACK_REGIONS",
    }
)
SECRET_NAME = re.compile(r"TOKEN|SECRET|WEBHOOK|PASSWORD|KEY", re.IGNORECASE)


@pytest.fixture(scope="module")
def module() -> Module:
    return tfmodel.load()


def main_entry_points() -> dict[str, str]:
    """main.py's functions-framework entry points: name -> 'cloud_event' | 'http'."""
    tree = ast.parse((ROOT / "main.py").read_text())
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Attribute) and deco.attr in ("cloud_event", "http"):
                    found[node.name] = deco.attr
    return found


def declared(module: Module) -> set[str]:
    return (
        {f"var.{v}" for v in module.variables}
        | {f"local.{name}" for name in module.locals}
        | {f"data.{t}.{n}" for t, n in module.data}
        | {f"{t}.{n}" for t, n in module.resources}
    )


def unresolved(module: Module) -> list[str]:
    known = declared(module)
    return sorted({f"{r.address} ({r.where})" for r in module.references() if r.address not in known})


# -- references -----------------------------------------------------------------------------------


def test_every_reference_resolves_to_a_declaration(module: Module) -> None:
    assert module.resources and module.variables and module.outputs
    assert unresolved(module) == []


def test_a_reference_to_nothing_is_caught(tmp_path: Path) -> None:
    # The check above can fail: a typo in a copy of the module is reported with its file.
    copy = tmp_path / "terraform"
    shutil.copytree(MODULE, copy, ignore=shutil.ignore_patterns(".build", ".terraform"))
    text = (copy / "iam.tf").read_text().replace("google_pubsub_topic.events.name", "google_pubsub_topic.event.name")
    (copy / "iam.tf").write_text(text.replace("var.runtime_service_accounts", "var.runtime_accounts"))
    assert unresolved(tfmodel.load(copy)) == [
        "google_pubsub_topic.event (iam.tf)",
        "var.runtime_accounts (iam.tf)",
    ]


def test_every_variable_is_used_and_documented(module: Module) -> None:
    used = {r.address for r in module.references()}
    for name, body in module.variables.items():
        assert f"var.{name}" in used, f"variable {name} is declared but never used"
        assert body.get("description"), f"variable {name} has no description"
    for name, body in module.outputs.items():
        assert body.get("description") and body.get("value"), name


def test_every_permission_group_becomes_a_custom_role_bound_somewhere(module: Module) -> None:
    permissions = yaml.safe_load((ROOT / "deploy" / "permissions.yaml").read_text())
    groups = {g["id"] for g in permissions["groups"]}
    role_projects = module.locals["role_projects"]
    assert set(role_projects) == groups
    text = "\n".join(p.read_text() for p in MODULE.glob("*.tf"))
    for group in groups:
        assert f'controller["{group}/' in text, f"permission group {group} is never bound"


# -- the functions' contract with main.py ---------------------------------------------------------


def functions(module: Module) -> dict[str, dict[str, Any]]:
    return {first(body["build_config"])["entry_point"]: body for body in module.of_type(FUNCTION).values()}


def test_every_deployed_entry_point_is_one_of_main_py(module: Module) -> None:
    # handle_command arrives in main.py with the commands work (issue 11); until it is merged this
    # fails on a branch without it, as it should: the module would deploy a missing entry point.
    entry_points = main_entry_points()
    deployed = functions(module)
    assert sorted(deployed) == sorted(entry_points) == ["handle_alert", "handle_command", "handle_http"]


def test_functions_are_gen2_python312_with_timeout_memory_and_the_controller_identity(module: Module) -> None:
    for entry, body in functions(module).items():
        build, service = first(body["build_config"]), first(body["service_config"])
        assert build["runtime"] == "python312", entry
        storage = first(first(build["source"])["storage_source"])
        assert storage == {
            "bucket": "${google_storage_bucket.source.name}",
            "object": "${google_storage_bucket_object.source.name}",
        }
        assert service["timeout_seconds"] == "${var.function_timeout_seconds}", entry
        assert service["available_memory"] == "${var.function_memory}", entry
        assert service["service_account_email"] == "${google_service_account.controller.email}", entry
        [check] = first(body["lifecycle"])["precondition"]
        assert check["condition"] == "${var.function_timeout_seconds > var.delivery_deadline_seconds}"


def test_timeout_default_is_above_the_delivery_deadline(module: Module) -> None:
    deadline = module.variables["delivery_deadline_seconds"]["default"]
    timeout = module.variables["function_timeout_seconds"]["default"]
    assert deadline == 50  # DESIGN §7's default
    assert timeout > deadline
    assert module.locals["common_env"]["ROLLBACK_DELIVERY_DEADLINE"] == "${tostring(var.delivery_deadline_seconds)}"


@pytest.mark.parametrize(("entry", "topic"), [("handle_alert", "alerts"), ("handle_command", "commands")])
def test_pubsub_functions_trigger_on_their_topic_with_retry(module: Module, entry: str, topic: str) -> None:
    assert main_entry_points().get(entry, "cloud_event") == "cloud_event"
    trigger = first(functions(module)[entry]["event_trigger"])
    assert trigger["event_type"] == PUBLISHED
    assert trigger["pubsub_topic"] == f"${{google_pubsub_topic.{topic}.id}}"
    # Temporary failures raise so Pub/Sub redelivers: without retry they would be lost.
    assert trigger["retry_policy"] == "RETRY_POLICY_RETRY"
    assert trigger["service_account_email"] == "${google_service_account.trigger.email}"


def test_http_function_has_no_trigger_and_trusts_the_platform_with_both_audiences(module: Module) -> None:
    assert main_entry_points()["handle_http"] == "http"
    http = functions(module)["handle_http"]
    assert "event_trigger" not in http
    env = first(http["service_config"])["environment_variables"]
    assert env == "${local.http_env}"
    expr = module.locals["http_env"]
    assert 'ROLLBACK_AUTH_TRUST_PLATFORM = "true"' in expr
    assert 'ROLLBACK_AUTH_AUDIENCE = join(",", [local.http_url_functions, local.http_url_run])' in expr
    assert "google_service_account.scheduler.email" in expr.split("ROLLBACK_ALLOWED_PRINCIPALS", 1)[1]
    assert module.locals["http_url_run"].startswith("https://${local.names.http}-")


def test_environment_uses_only_contract_variables_and_no_secret_values(module: Module) -> None:
    for entry, body in functions(module).items():
        service = first(body["service_config"])
        keys = env_keys(module, service["environment_variables"])
        assert keys <= KNOWN_ENV, f"{entry}: unknown variables {sorted(keys - KNOWN_ENV)}"
        assert {"ROLLBACK_COMMANDS_TOPIC", "ROLLBACK_EVENTS_TOPIC", "ROLLBACK_DELIVERY_DEADLINE"} <= keys
        assert not [k for k in keys if SECRET_NAME.search(k)], f"{entry}: a secret in plain environment"
        [secrets] = service["dynamic"]
        content = first(secrets["secret_environment_variables"]["content"])
        assert secrets["secret_environment_variables"]["for_each"] == "${local.slack_secrets}"
        assert content["project_id"] == "${var.project}"
    assert module.locals["slack_secrets"].startswith(
        "${{for key, id in {SLACK_BOT_TOKEN = var.slack_bot_token_secret_id"
    )
    assert "SLACK_SIGNING_SECRET = var.slack_signing_secret_secret_id" in module.locals["slack_secrets"]


def test_secrets_are_never_plain_variables(module: Module) -> None:
    for name, body in module.variables.items():
        if SECRET_NAME.search(name):
            # Only the *id* of a Secret Manager secret, never its value.
            assert name.endswith("_secret_id") and body.get("default") is None, name
            assert "Secret Manager secret id" in body["description"], name
    # Secret values would land in Terraform's state.
    assert not module.of_type("google_secret_manager_secret_version")


# -- who may invoke what --------------------------------------------------------------------------


def iam_members(module: Module) -> list[tuple[str, str, str]]:
    found = []
    for (type_, name), body in module.resources.items():
        if "_iam_" in type_ and not type_.endswith("_custom_role"):
            assert type_.endswith("_iam_member"), f"{type_}.{name}: authoritative IAM would remove others' grants"
            found.append((f"{type_}.{name}", body["role"], body.get("member", "") or body.get("for_each", "")))
    return found


def test_no_public_invoker_anywhere(module: Module) -> None:
    for (type_, name), body in module.resources.items():
        for text in tfmodel.strings(body):
            assert not any(p in text for p in PUBLIC), f"{type_}.{name} names {text!r}"
    invokers = [(a, m) for a, role, m in iam_members(module) if role == "roles/run.invoker"]
    assert sorted(invokers) == [
        ("google_cloud_run_v2_service_iam_member.http_invokers", "${each.value}"),
        (
            "google_cloud_run_v2_service_iam_member.trigger_invokes",
            "serviceAccount:${google_service_account.trigger.email}",
        ),
    ]
    http = module.resources[("google_cloud_run_v2_service_iam_member", "http_invokers")]
    assert (
        http["for_each"]
        == '${toset(concat(["serviceAccount:${google_service_account.scheduler.email}"], var.invokers))}'
    )
    [validation] = module.variables["invokers"]["validation"]
    assert (
        validation["condition"]
        == '${alltrue([for m in var.invokers : !contains(["allUsers", "allAuthenticatedUsers"], m)])}'
    )


def test_the_controller_gets_custom_roles_only(module: Module) -> None:
    for address, role, member in iam_members(module):
        if member == "${local.controller_member}":
            assert role.startswith("${google_project_iam_custom_role.controller["), address
        else:
            assert role in ("roles/run.invoker", "roles/pubsub.publisher"), address
    [(address, member)] = [(a, m) for a, role, m in iam_members(module) if role == "roles/pubsub.publisher"]
    assert member == "${local.monitoring_agent}"
    assert "gcp-sa-monitoring-notification.iam.gserviceaccount.com" in module.locals["monitoring_agent"]


def test_custom_role_permissions_come_from_permissions_yaml(module: Module) -> None:
    [role] = module.of_type("google_project_iam_custom_role").values()
    assert role["permissions"] == "${[for p in local.groups[each.value.group].permissions : p.name]}"
    assert module.locals["permissions"] == '${yamldecode(file("${path.module}/../permissions.yaml"))}'
    assert module.locals["groups"] == "${{for g in local.permissions.groups : g.id => g}}"
    for text in tfmodel.strings(module.resources):
        assert not re.fullmatch(r"roles/(owner|editor|viewer|run\.admin|run\.developer|iam\.serviceAccountUser)", text)


def test_alerts_topic_feeds_monitoring_through_a_pubsub_channel(module: Module) -> None:
    channel = module.resources[("google_monitoring_notification_channel", "alerts")]
    assert channel["type"] == "pubsub"
    assert channel["labels"] == {"topic": "${google_pubsub_topic.alerts.id}"}
    grant = module.resources[("google_pubsub_topic_iam_member", "monitoring_publishes_alerts")]
    assert grant["topic"] == "${google_pubsub_topic.alerts.name}"


def test_scheduler_ticks_with_an_oidc_token_of_an_allowed_principal(module: Module) -> None:
    job = module.resources[("google_cloud_scheduler_job", "canary_tick")]
    target = first(job["http_target"])
    assert target["http_method"] == "POST"
    assert target["uri"].endswith("/canary/tick")
    assert target["uri"].startswith("${google_cloudfunctions2_function.http.")
    oidc = first(target["oidc_token"])
    assert oidc["service_account_email"] == "${google_service_account.scheduler.email}"
    assert oidc["audience"] == "${local.http_url_run}"  # one of ROLLBACK_AUTH_AUDIENCE


# -- alert policies -------------------------------------------------------------------------------


def generated_terraform() -> str:
    policies = load_policy_paths([str(ROOT / "policies")])
    return dumps(to_terraform(alertpolicies.generate(policies)))


def test_alert_policies_tf_json_is_what_the_generator_writes_for_policies() -> None:
    # Regenerate: python -m controller alert-policies policies --format terraform --output-dir deploy/terraform
    assert (MODULE / FILENAME).read_text() == generated_terraform()


def test_alert_policies_are_terraform_resources_notifying_the_module_channel(module: Module) -> None:
    policies = module.of_type(RESOURCE_TYPE)
    assert sorted(policies) == ["default_error_rate", "default_health", "default_latency_p95"]
    for body in policies.values():
        assert body["project"] == "${var.project}"
        assert body["notification_channels"] == ["${google_monitoring_notification_channel.alerts.id}"]
        assert body["user_labels"]["managed_by"] == "rollback-controller"
        condition = first(body["conditions"])
        threshold = first(condition["condition_threshold"])
        assert first(threshold["aggregations"])["group_by_fields"] == list(alertpolicies.GROUP_BY)
        # Monitoring's own ${...} variables reach Google literally, escaped from Terraform.
        assert tfmodel.expressions(body["documentation"]["subject"]) == []
        assert "$${resource.label.service_name}" in body["documentation"]["subject"]


def test_terraform_format_matches_the_api_json_field_for_field() -> None:
    policies = load_policy_paths([str(ROOT / "policies")])
    generated = alertpolicies.generate(policies)
    document = to_terraform(generated)["resource"][RESOURCE_TYPE]
    for item in generated:
        body = document[f"{item.policy}_{item.trigger}"]
        api = item.body
        assert body["display_name"] == api["displayName"]
        assert body["combiner"] == api["combiner"] and body["severity"] == api["severity"]
        assert body["alert_strategy"] == {"auto_close": api["alertStrategy"]["autoClose"]}
        assert body["user_labels"] == api["userLabels"]
        t, a = body["conditions"][0]["condition_threshold"], api["conditions"][0]["conditionThreshold"]
        assert t["threshold_value"] == a["thresholdValue"] and t["duration"] == a["duration"]
        assert t["filter"] == a["filter"]
        assert t["aggregations"][0]["cross_series_reducer"] == a["aggregations"][0]["crossSeriesReducer"]


def test_cli_format_terraform_writes_the_tf_json(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    cli_alert_policies.add_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["alert-policies", str(ROOT / "policies"), "--format", "terraform", "--output-dir", str(tmp_path)]
    )
    out, err = io.StringIO(), io.StringIO()
    assert cli_alert_policies.run(args, out, err) == 0
    assert out.getvalue().strip() == str(tmp_path / FILENAME)
    assert "placeholder" not in err.getvalue()  # the module's channel, not the placeholder
    assert (tmp_path / FILENAME).read_text() == generated_terraform()
    printed = io.StringIO()
    args = parser.parse_args(["alert-policies", str(ROOT / "policies"), "--format", "terraform"])
    assert cli_alert_policies.run(args, printed, io.StringIO()) == 0
    assert json.loads(printed.getvalue())["resource"][RESOURCE_TYPE]


def test_module_readme_documents_every_variable_and_output(module: Module) -> None:
    readme = (MODULE / "README.md").read_text()
    for name in [*module.variables, *module.outputs]:
        assert f"| `{name}` |" in readme, f"deploy/terraform/README.md does not document {name}"
    assert "terraform init" in readme and "terraform plan" in readme and "terraform apply" in readme
