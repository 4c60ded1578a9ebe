"""Settings is the one reader of the environment, and wiring the one place clients are built from it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import SecretStr

from controller.adapters.auth import AuthConfig
from controller.app import wiring
from controller.app.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]

TIMEOUTS = {
    "ROLLBACK_API_TIMEOUT": ("api_timeout", 10.0, "0.5", 0.5),
    "ROLLBACK_OPERATION_TIMEOUT": ("operation_timeout", 60.0, "2", 2.0),
    "ROLLBACK_CONFLICT_RETRIES": ("conflict_retries", 4, "2", 2),
    "ROLLBACK_MONITORING_DEADLINE": ("monitoring_deadline", 5.0, "0.25", 0.25),
}


@pytest.mark.parametrize("variable", sorted(TIMEOUTS))
def test_the_timeouts_can_be_set_and_default_as_before(variable: str) -> None:
    field, default, raw, expected = TIMEOUTS[variable]
    assert getattr(Settings.from_env({}), field) == default
    assert getattr(Settings.from_env({variable: f" {raw} "}), field) == expected
    assert getattr(Settings.from_env({variable: "  "}), field) == default  # blank = unset


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("ROLLBACK_API_TIMEOUT", "0"),
        ("ROLLBACK_API_TIMEOUT", "soon"),
        ("ROLLBACK_OPERATION_TIMEOUT", "-1"),
        ("ROLLBACK_CONFLICT_RETRIES", "0"),
        ("ROLLBACK_CONFLICT_RETRIES", "11"),
        ("ROLLBACK_CONFLICT_RETRIES", "2.5"),
        ("ROLLBACK_MONITORING_DEADLINE", "0"),
        ("ROLLBACK_DELIVERY_DEADLINE", "never"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: raw})
    message = str(caught.value)
    assert message.startswith(f"{variable}=")
    assert "\n" not in message


def test_settings_built_in_code_ignore_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLBACK_API_TIMEOUT", "0.5")
    monkeypatch.setenv("ROLLBACK_DRY_RUN", "true")
    assert Settings().api_timeout == 10.0
    assert Settings().dry_run is False
    # ... and from_env() without a mapping reads it.
    assert Settings.from_env().api_timeout == 0.5
    assert Settings.from_env().dry_run is True


def test_values_built_in_code_stay_strictly_typed() -> None:
    with pytest.raises(ValueError, match="api_timeout"):
        Settings(api_timeout=0)
    with pytest.raises(ValueError, match="dry_run"):
        Settings(dry_run="yes")  # type: ignore[arg-type]


def test_secrets_never_print() -> None:
    settings = Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s3cret"})
    assert settings.slack_bot_token == SecretStr("xoxb-1")
    assert "xoxb-1" not in repr(settings)
    assert "s3cret" not in repr(settings)


def test_clients_get_the_configured_bounds() -> None:
    settings = Settings.from_env(
        {"ROLLBACK_API_TIMEOUT": "1.5", "ROLLBACK_OPERATION_TIMEOUT": "7", "ROLLBACK_MONITORING_DEADLINE": "0.5"}
    )
    run = wiring.build_run_client(settings)
    assert (run._api_timeout, run._operation_timeout) == (1.5, 7.0)
    tight = wiring.build_run_client(settings, api_timeout=0.8, operation_timeout=1.8)
    assert (tight._api_timeout, tight._operation_timeout) == (0.8, 1.8)
    assert wiring.build_monitoring_client(settings)._deadline == 0.5


def test_the_api_authentication_reads_the_same_as_before() -> None:
    env = {
        "ROLLBACK_AUTH_AUDIENCE": " https://a.example.com,https://b.example.com ",
        "ROLLBACK_ALLOWED_PRINCIPALS": "alice@example.com, *@example.org",
        "ROLLBACK_AUTH_CERTS_URL": "http://127.0.0.1:9/certs",
        "ROLLBACK_AUTH_TRUST_PLATFORM": "yes",
        "SLACK_SIGNING_SECRET": "s3cret",
        "ROLLBACK_SLACK_ALLOWED_USERS": "U0123ABCD",
    }
    assert wiring.build_auth_config(Settings.from_env(env)) == AuthConfig.from_env(env)
    assert wiring.build_auth_config(Settings.from_env({})) == AuthConfig.from_env({})
    # A malformed allow list is the API's to report (its routes answer 503), not a settings error.
    bad = {"ROLLBACK_ALLOWED_PRINCIPALS": "not-an-email"}
    with pytest.raises(ValueError, match="ROLLBACK_ALLOWED_PRINCIPALS"):
        wiring.build_auth_config(Settings.from_env(bad))


def _reads_environment(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        is_os = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
        if is_os and isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "environb"}:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: os.{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: from os import {a.name}" for a in node.names]
    return found


# Modules that hand the environment, untouched, to something else (never read a variable).
PASS_THROUGH = {
    "controller/app/settings.py",  # the one reader
    "controller/surfaces/api.py",  # get_api: os.environ to build_api -> Settings.from_env
    "controller/surfaces/demo.py",  # the demo's child processes get the developer's environment
}


def test_only_settings_reads_the_environment() -> None:
    sources = [ROOT / "main.py", *sorted((ROOT / "controller").rglob("*.py"))]
    readers = [
        hit
        for path in sources
        if "emulator" not in path.relative_to(ROOT).parts and str(path.relative_to(ROOT)) not in PASS_THROUGH
        for hit in _reads_environment(path)
    ]
    assert readers == []


def test_every_documented_variable_is_a_settings_field() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration") : readme.index("## Logs")]
    documented = {
        name
        for line in table.splitlines()
        if line.startswith("| `")
        for name in line.split("|")[1].replace("`", "").replace(" ", "").split(",")
    }
    read: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        assert alias is not None
        read.update(str(choice) for choice in getattr(alias, "choices", [alias]))
    # PUBSUB_EMULATOR_HOST is google-cloud-pubsub's own; every other documented variable is read here.
    assert documented - read == {"PUBSUB_EMULATOR_HOST"}
    assert read - documented == set()
