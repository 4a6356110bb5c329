"""A local stand-in for Replicate's predictions API, following its published protocol, with
faults to inject. Outputs are real MP4s of the requested duration and size."""

from __future__ import annotations

import asyncio
import itertools
import random
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from services.generator.providers.render import RenderRequest, render
from shared.catalog import frame_size

TOKEN = "r8_test_token"
RANDOM_FAULTS = ("429", "500", "502", "503", "reset", "malformed")


@dataclass
class Script:
    """Faults, consumed in order; after the list runs out, calls behave."""

    submit: list[str] = field(default_factory=list)  # 429 500 502 503 reset slow malformed huge
    poll: list[str] = field(default_factory=list)
    processing_polls: int = 2
    #: per submission: succeeded | no_output | failed | safety | never | expired | nul_error
    #: | huge_error
    outcomes: list[str] = field(default_factory=list)
    retry_after: str = "1"
    #: render outputs at this short side instead of the requested one
    wrong_short_side: int | None = None
    #: serve outputs chunked, without a Content-Length
    chunked_output: bool = False
    #: after the lists run out, this share of submits and polls fails with a random fault
    fail_rate: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    failures: int = 0


class ReplicateStandIn:
    def __init__(self, slow_seconds: float = 2.0) -> None:
        self.script = Script()
        self.slow_seconds = slow_seconds
        self.predictions: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.submissions = 0
        self.cancels: list[str] = []
        self.create_calls = 0
        self._ids = itertools.count(1)
        self._files = Path(tempfile.mkdtemp(prefix="replicate-standin-"))
        self.base_url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/models/{owner}/{name}/predictions", self.create)
        app.router.add_get("/v1/predictions", self.list)
        app.router.add_get("/v1/predictions/{id}", self.get)
        app.router.add_post("/v1/predictions/{id}/cancel", self.cancel)
        app.router.add_get("/files/{name}", self.file)
        return app

    async def _fault(self, faults: list[str], request: web.Request) -> web.StreamResponse | None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"detail": "Unauthenticated"}, status=401)
        if faults:
            fault = faults.pop(0)
        elif self.script.fail_rate and self.script.rng.random() < self.script.fail_rate:
            fault = self.script.rng.choice(RANDOM_FAULTS)
            self.script.failures += 1
        else:
            return None
        if fault == "429":
            return web.json_response({"detail": "throttled"}, status=429,
                                     headers={"Retry-After": self.script.retry_after})
        if fault in ("500", "502", "503"):
            return web.Response(status=int(fault), text="upstream trouble")
        if fault == "reset":
            assert request.transport is not None
            request.transport.abort()
            raise ConnectionResetError("stand-in reset the connection")
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
            return None
        if fault == "malformed":
            return web.Response(text='{"id": "oops", "status": ', content_type="application/json")
        if fault == "huge":  # well-formed, but two megabytes
            return web.json_response({"id": "oops", "status": "starting", "pad": "x" * 2**21},
                                     status=201)
        raise AssertionError(f"unknown fault {fault}")

    async def create(self, request: web.Request) -> web.StreamResponse:
        self.create_calls += 1
        fault = await self._fault(self.script.submit, request)
        if fault is not None:
            return fault
        body = await request.json()
        pid = f"p{next(self._ids):04d}"
        outcome = self.script.outcomes.pop(0) if self.script.outcomes else "succeeded"
        self.submissions += 1
        self.predictions[pid] = {
            "id": pid, "model": f"{request.match_info['owner']}/{request.match_info['name']}",
            "input": body["input"], "status": "starting", "output": None, "error": None,
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "urls": {"get": f"{self.base_url}/v1/predictions/{pid}",
                     "cancel": f"{self.base_url}/v1/predictions/{pid}/cancel"},
            "_outcome": outcome,
        }
        self.polls[pid] = 0
        return web.json_response(self._public(self.predictions[pid]), status=201)

    def _public(self, prediction: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in prediction.items() if not k.startswith("_")}

    async def get(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault(self.script.poll, request)
        if fault is not None:
            return fault
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None:
            return web.json_response({"detail": "Not found"}, status=404)
        pid = prediction["id"]
        self.polls[pid] += 1
        if prediction["status"] in ("starting", "processing"):
            outcome = prediction["_outcome"]
            if outcome == "never" or self.polls[pid] <= self.script.processing_polls:
                prediction["status"] = "processing"
            elif outcome == "failed":
                prediction.update(status="failed", error="CUDA out of memory")
            elif outcome == "nul_error":  # text the job's stored error cannot hold as is
                prediction.update(status="failed", error="worker\x00crashed")
            elif outcome == "huge_error":  # more than the video's events should carry
                prediction.update(status="failed", error="Traceback: " + "x" * 500_000)
            elif outcome == "safety":
                prediction.update(status="failed",
                                  error="NSFW content detected: flagged by the safety checker")
            elif outcome == "no_output":
                prediction.update(status="succeeded", output=None)
            else:
                name = f"{pid}.mp4" if outcome == "succeeded" else f"{pid}-gone.mp4"
                if outcome == "succeeded":
                    await asyncio.to_thread(self._render, prediction["input"], name)
                prediction.update(status="succeeded", output=f"{self.base_url}/files/{name}")
        return web.json_response(self._public(prediction))

    def _render(self, input_: dict[str, Any], name: str) -> None:
        short = self.script.wrong_short_side or int(str(input_["resolution"]).rstrip("p"))
        width, height = frame_size(short, input_["aspect_ratio"])
        fps = int(input_["fps"])
        render(RenderRequest(width=width, height=height, fps=fps,
                             frames=int(input_["duration"]) * fps, title="stand-in",
                             text=str(input_["prompt"]), badge="REPLICATE STAND-IN",
                             out_video=str(self._files / name),
                             out_thumbnail=str(self._files / f"{name}.jpg"), preset="ultrafast"))

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault([], request)
        if fault is not None:
            return fault
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None:
            return web.json_response({"detail": "Not found"}, status=404)
        self.cancels.append(prediction["id"])
        if prediction["status"] in ("starting", "processing"):
            prediction["status"] = "canceled"
        return web.json_response(self._public(prediction))

    async def list(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault([], request)
        if fault is not None:
            return fault
        items = sorted(self.predictions.values(), key=lambda p: p["created_at"], reverse=True)
        return web.json_response({"next": None, "previous": None,
                                  "results": [self._public(p) for p in items]})

    async def file(self, request: web.Request) -> web.StreamResponse:
        path = self._files / request.match_info["name"]
        if not path.exists():
            return web.Response(status=404, text="expired")
        if not self.script.chunked_output:
            return web.FileResponse(path)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        data = path.read_bytes()
        for start in range(0, len(data), 4096):
            await response.write(data[start:start + 4096])
        await response.write_eof()
        return response
