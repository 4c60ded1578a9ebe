"""HTTP routes of ``handle_http``.

For now: ``GET /healthz`` (and ``GET /``), answering without touching any cloud API, so a
load balancer or an uptime check can call it cheaply. Manual controls come next.
"""

from __future__ import annotations

from typing import Any

from controller import __version__


def handle(request: Any) -> tuple[dict[str, Any], int]:
    path = (request.path or "/").rstrip("/") or "/"
    if request.method == "GET" and path in ("/", "/healthz"):
        return {"status": "ok", "version": __version__}, 200
    return {"error": "not_found", "message": f"no route for {request.method} {path}"}, 404
