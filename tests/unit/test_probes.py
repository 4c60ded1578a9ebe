"""What the health trigger can see of a revision's probes (issue 9 point 9), and what the generated
alert policy says about it."""

from __future__ import annotations

import argparse
import io
import json
from datetime import timedelta
from pathlib import Path

from support import T0

from controller.adapters.policy_files import load_policies
from controller.core.alertpolicies import generate
from controller.core.probes import blind_spot, liveness_period
from controller.core.state import Revision
from controller.surfaces.cli_alert_policies import add_command

DEFAULT = Path(__file__).resolve().parent.parent.parent / "policies" / "default.yaml"


def test_default_cloud_run_probes_are_a_blind_spot() -> None:
    default = Revision(name="r1", create_time=T0, ready=True, startup_period=240)
    assert liveness_period(default) is None
    assert "r1 has no liveness probe (a startup probe every 240s" in blind_spot(default)
    live = default.model_copy(update={"liveness_period": 15})
    assert liveness_period(live) == timedelta(seconds=15) and blind_spot(live) == ""


def _health(probe_period: timedelta | None) -> dict[str, object]:
    [health] = [g for g in generate(load_policies(DEFAULT), probe_period=probe_period) if g.trigger == "health"]
    return health.body


def test_alert_policy_says_when_the_service_has_no_liveness_probe() -> None:
    blind = _health(None)
    assert "has no liveness probe" in json.dumps(blind)
    assert "has no liveness probe" not in json.dumps(_health(timedelta(seconds=10)))
    # the window is sized for 240 s startup probes, so it holds the whole run of failures
    assert blind["conditions"] != _health(timedelta(seconds=10))["conditions"]


def run_cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="python -m controller")
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["alert-policies", *argv])
    out, err = io.StringIO(), io.StringIO()
    return args.handler(args, out, err), out.getvalue(), err.getvalue()


def test_cli_probe_period() -> None:
    code, out, _ = run_cli(str(DEFAULT), "--probe-period", "none")
    assert code == 0 and "has no liveness probe" in out
    code, _, err = run_cli(str(DEFAULT), "--probe-period", "ten")
    assert code == 2 and "--probe-period 'ten': expected whole seconds" in err
