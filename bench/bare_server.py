"""Baseline: the least an aiohttp handler can do for a POST (read JSON, answer 202 JSON)."""

from __future__ import annotations

import sys
import uuid

from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response({"id": str(uuid.uuid4()), "received": len(body)}, status=202)


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/videos", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
