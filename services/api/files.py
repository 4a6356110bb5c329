"""Files served as they are: the media store's videos and thumbnails, the web page's assets.

Each route takes only names of the shape its directory holds (no `..`, no subdirectory
beyond the media store's one level), so no request reaches outside its directory, and
serves only regular files (not a symlink, not a directory). Anything else, a missing file
included, is a 404 problem document like every other error of the API (aiohttp's static
routes answer a missing file with a bodiless 404 and a directory with a plain-text 403)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from aiohttp import web

from services.api.openapi import operation
from services.api.problems import problem

#: What `services.generator.media.media_keys` makes: `<2 hex>/<video id>.mp4|.jpg`.
MEDIA_NAME = (r"[0-9a-f]{2}/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
              r"\.(?:mp4|jpg)")
#: The web page's assets: one level, plain names.
ASSET_NAME = r"[A-Za-z0-9_-]+\.(?:css|js|html)"


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def file_routes(prefix: str, root: Path, name: str, summary: str) -> list[web.RouteDef]:
    """GET (and HEAD) `<prefix>{name}` for the files of `root` whose names match `name`."""

    @operation(summary=summary, responses={200: None, 404: None}, auth=None, tags=("files",))
    async def serve(request: web.Request) -> web.StreamResponse:
        path = root / request.match_info["name"]
        if not await asyncio.to_thread(_regular_file, path):
            return problem(404, "Not found", "no such file")
        return web.FileResponse(path)

    return [web.get(f"{prefix}{{name:{name}}}", serve)]
