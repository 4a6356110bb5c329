"""RFC 9457 problem details for every error the api answers."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from shared.events import FieldError

PROBLEM_TYPE = "application/problem+json"


def problem(
    status: int, title: str, detail: str | None = None, *,
    errors: list[FieldError] | None = None, headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if errors is not None:
        body["errors"] = [e.model_dump() for e in errors]
    body.update(extra)
    return web.Response(
        status=status, text=json.dumps(body), content_type=PROBLEM_TYPE, headers=headers
    )


def invalid(errors: list[FieldError]) -> web.Response:
    return problem(
        422, "The request is invalid",
        f"{len(errors)} field(s) failed validation", errors=errors,
    )
