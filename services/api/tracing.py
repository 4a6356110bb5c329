"""Request ids: every answer carries `X-Request-ID`, the client's own if it sent a plain
one (1-128 letters, digits and `._:-`), else a new one; the logs of a failed request and the
body of a 500 name it, so that a report of an error can be matched to its log lines."""

from __future__ import annotations

import re
from uuid import uuid4

from aiohttp import web

REQUEST_ID = web.RequestKey("request_id", str)
HEADER = "X-Request-ID"
_PLAIN = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(request: web.Request) -> str:
    """The request's id, made on first use."""
    rid = request.get(REQUEST_ID)
    if rid is None:
        given = request.headers.get(HEADER, "")
        rid = given if _PLAIN.fullmatch(given) else uuid4().hex
        request[REQUEST_ID] = rid
    return rid


async def add_request_id(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every answer, streamed ones and files included."""
    assert isinstance(request, web.Request)
    response.headers[HEADER] = request_id(request)
