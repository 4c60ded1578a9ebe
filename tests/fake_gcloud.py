"""A stand-in ``gcloud`` for testing deploy/gcloud/install.sh's idempotency (no Google involved).

It remembers what was created in a JSON state file (``FAKE_GCLOUD_STATE``) and appends every call
to ``FAKE_GCLOUD_CALLS``, one JSON array per line. Lookups (describe, list, get-iam-policy) answer
from the state in the shapes the script's ``--format`` projections ask for; a lookup of something
missing exits 1 like gcloud's NOT_FOUND. Only the commands install.sh uses are modelled; anything
else exits 3 so that a new, unmodelled command fails the test instead of passing silently.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

MUTATING = ("create", "update", "add-iam-policy-binding", "deploy", "enable")


def _flags(args: list[str]) -> tuple[list[str], dict[str, str]]:
    positional, flags = [], {}
    for arg in args:
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            flags[name] = value
        else:
            positional.append(arg)
    return positional, flags


def main(argv: list[str]) -> int:
    state_path = Path(os.environ["FAKE_GCLOUD_STATE"])
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() else {}
    with open(os.environ["FAKE_GCLOUD_CALLS"], "a") as calls:
        calls.write(json.dumps(argv) + "\n")
    pos, fl = _flags([a for a in argv if a != "--quiet"])
    words = " ".join(pos)
    project = fl.get("project", "")

    def save() -> int:
        state_path.write_text(json.dumps(state))
        return 0

    def key(*parts: str) -> str:
        return "|".join(parts)

    # -- projects, APIs -----------------------------------------------------------------------------
    if words.startswith("projects describe"):
        print("123456789")
        return 0
    if words == "services list":
        print("\n".join(state.get("apis", [])))
        return 0
    if words.startswith("services enable"):
        state["apis"] = sorted(set(state.get("apis", [])) | set(pos[2:]))
        return save()

    # -- IAM bindings (any group) -------------------------------------------------------------------
    if "get-iam-policy" in pos or "add-iam-policy-binding" in pos:
        verb = "get-iam-policy" if "get-iam-policy" in pos else "add-iam-policy-binding"
        i = pos.index(verb)
        resource = key(*pos[:i], pos[i + 1], project, fl.get("region", ""))
        bindings = state.setdefault("bindings", {})
        if verb == "add-iam-policy-binding":
            bindings.setdefault(resource, [])
            pair = [fl["role"], fl["member"]]
            if pair not in bindings[resource]:
                bindings[resource].append(pair)
            return save()
        m = re.fullmatch(r"bindings\.role=(\S+) AND bindings\.members=(\S+)", fl.get("filter", ""))
        assert m, fl
        if [m[1], m[2]] in bindings.get(resource, []):
            print(m[1])
        return 0

    # -- simple describe/create resources -----------------------------------------------------------
    simple = {"pubsub topics": "topics", "iam service-accounts": "accounts"}
    for group, bucket in simple.items():
        if words.startswith(group + " "):
            verb, name = pos[2], pos[3]
            if group == "iam service-accounts" and verb == "create":
                name = f"{name}@{project}.iam.gserviceaccount.com"
            items = state.setdefault(bucket, [])
            if verb == "describe":
                return 0 if key(name, project) in items else 1
            if verb == "create":
                items.append(key(name, project))
                return save()

    if words.startswith("iam roles "):
        verb, role = pos[2], pos[3]
        roles = state.setdefault("roles", {})
        if verb == "describe":
            if key(role, project) not in roles:
                return 1
            print(";".join(roles[key(role, project)]))
            return 0
        if verb in ("create", "update"):
            roles[key(role, project)] = fl["permissions"].split(",")
            return save()

    if words.startswith("beta monitoring metrics-scopes "):
        scopes = state.setdefault("scopes", {})
        container = pos[4]
        if pos[3] == "list":
            for scope in scopes.get(container, []):
                print(f"locations/global/metricsScopes/{scope}")
            return 0
        if pos[3] == "create":
            scopes.setdefault(container, []).append(project)
            return save()

    if words.startswith("beta monitoring channels "):
        channels = state.setdefault("channels", {})
        if pos[3] == "list":
            topic = re.search(r'labels\.topic="([^"]+)"', fl["filter"])
            assert topic, fl
            if topic[1] in channels:
                print(channels[topic[1]])
            return 0
        if pos[3] == "create":
            name = fl["channel-labels"].removeprefix("topic=")
            channels[name] = f"projects/{project}/notificationChannels/{len(channels) + 1}"
            return save()

    if words.startswith("functions "):
        functions = state.setdefault("functions", {})
        name = pos[2]
        if pos[1] == "describe":
            if name not in functions:
                return 1
            print(functions[name])
            return 0
        if pos[1] == "deploy":
            functions[name] = fl["update-labels"].removeprefix("rollback_config=")
            return save()

    if words.startswith("scheduler jobs "):
        jobs = state.setdefault("jobs", {})
        if pos[2] == "describe":
            if pos[3] not in jobs:
                return 1
            print(jobs[pos[3]])
            return 0
        if pos[2] in ("create", "update") and pos[3] == "http":
            jobs[pos[4]] = f"{fl['schedule']}\t{fl['uri']}"
            return save()

    if words.startswith("alpha monitoring policies "):
        policies = state.setdefault("policies", {})
        if pos[3] == "list":
            wanted = re.fullmatch(r'displayName="(.*)"', fl["filter"])
            for name, display in policies.items():
                if wanted is None or wanted[1] == display:
                    print(name if wanted else f"{name}\t{display}")
            return 0
        if pos[3] == "create":
            display = json.loads(Path(fl["policy-from-file"]).read_text())["displayName"]
            policies[f"projects/{project}/alertPolicies/{len(policies) + 1}"] = display
            return save()

    if words.startswith("logging metrics "):
        metrics = state.setdefault("metrics", {})
        name = pos[3]
        if pos[2] == "describe":
            if name not in metrics:
                return 1
            print(metrics[name])
            return 0
        if pos[2] in ("create", "update"):
            metrics[name] = json.loads(Path(fl["config-from-file"]).read_text())["filter"]
            return save()

    if words.startswith("monitoring dashboards "):
        dashboards = state.setdefault("dashboards", {})
        if pos[2] == "list":
            print("\n".join(dashboards))
            return 0
        if pos[2] == "create":
            display = json.loads(Path(fl["config-from-file"]).read_text())["displayName"]
            dashboards[f"projects/{project}/dashboards/{len(dashboards) + 1}"] = display
            return save()

    print(f"fake gcloud: unmodelled command: {argv}", file=sys.stderr)
    return 3


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
