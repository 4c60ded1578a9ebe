"""A functions-framework source file for tests: records every CloudEvent it receives.

tests/unit/test_incident.py builds a real functions-framework app from this file and posts
the golden requests to it, so the parser is tested on exactly what the framework hands over.
The file stem is deliberately not ``main``: the framework registers the source under its
stem in ``sys.modules``, and the project has its own ``main.py``.
"""

from typing import Any

import functions_framework

# The framework re-executes this file for every create_app(); each app gets a fresh list,
# reached by the test through sys.modules["ff_probe_main"].
RECEIVED: list[Any] = []


@functions_framework.cloud_event
def ff_probe_capture(cloud_event: Any) -> None:
    RECEIVED.append(cloud_event)
