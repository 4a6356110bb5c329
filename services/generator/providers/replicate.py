"""A hosted provider adapter for Replicate's predictions API (HTTP, asynchronous).

Protocol (Replicate's published API): `POST /v1/models/{owner}/{name}/predictions` with
`{"input": {...}}` creates a prediction (201, `{"id", "status": "starting", ...}`);
`GET /v1/predictions/{id}` reads it (`starting`, `processing`, `succeeded`, `failed`,
`canceled`; `output` is a URL or a list of URLs, `error` a message); `POST
/v1/predictions/{id}/cancel` cancels it; `GET /v1/predictions` lists recent ones.

Replicate takes no idempotency key. So the prediction id is stored as soon as the create
call answers, and a submission marker before it: after a crash inside the create call, the
recent predictions are searched for one with the same input before submitting again.

Failures: 429 (honouring Retry-After), 5xx, connection errors, timeouts and malformed
answers are retried here for polls (a poll failing does not restart the job) and reported
as retryable for creates; `succeeded` without output and an expired output URL need a new
prediction; a `failed` prediction whose error reads as a safety refusal is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp

from services.generator.providers.base import JobHandle, Output, Provider, ProviderError
from shared.events import JobSpec

_SAFETY = re.compile(r"nsfw|safety|flagged|content policy|moderation|sensitive", re.I)
_RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
#: An API answer (a prediction, a page of them) is kilobytes.
MAX_ANSWER_BYTES = 1024 * 1024
#: A short video is tens of megabytes; an output past this is a provider's fault, and is
#: refused before it fills the disk.
MAX_OUTPUT_BYTES = 512 * 1024 * 1024


def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
    """Retry-After (RFC 9110): seconds, or an HTTP date; None if absent or neither (and
    `ProviderError` drops a number that is no usable wait: infinite, NaN, negative)."""
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, as HTTP dates are
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class ReplicateProvider(Provider):
    name = "replicate"

    def __init__(
        self, session: aiohttp.ClientSession, *, base_url: str, token: str,
        poll_interval: float = 2.0, request_timeout: float = 15.0,
        max_poll_failures: int = 5, backoff_base: float = 0.5, backoff_cap: float = 30.0,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._poll_interval = poll_interval
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._max_poll_failures = max_poll_failures
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_output_bytes = max_output_bytes

    # --- protocol ----------------------------------------------------------------------

    def _input(self, spec: JobSpec) -> dict[str, Any]:
        return {"prompt": f"{spec.character_name}: {spec.scene_description}",
                "duration": spec.duration_seconds, "aspect_ratio": spec.aspect_ratio,
                "resolution": f"{min(spec.width, spec.height)}p", "fps": spec.fps}

    async def _call(self, method: str, path_or_url: str, body: Any = None) -> dict[str, Any]:
        url = path_or_url if path_or_url.startswith("http") else self._base + path_or_url
        try:
            async with self._session.request(method, url, json=body, headers=self._headers,
                                             timeout=self._timeout) as resp:
                answer = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    answer += chunk
                    if len(answer) > MAX_ANSWER_BYTES:  # not read whole into memory
                        raise ProviderError(
                            "provider_malformed",
                            f"{method} {url}: an answer over {MAX_ANSWER_BYTES} bytes",
                            retryable=True)
                text = answer.decode(resp.charset or "utf-8")
                if resp.status in _RETRYABLE_STATUS:
                    raise ProviderError(
                        "provider_unavailable" if resp.status != 429 else "provider_rate_limited",
                        f"{method} {url}: HTTP {resp.status}", retryable=True,
                        retry_after=_retry_after(resp))
                if resp.status >= 400:
                    raise ProviderError("provider_rejected",
                                        f"{method} {url}: HTTP {resp.status}: {text[:300]}",
                                        retryable=False)
                data = json.loads(text)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                return data
        except ProviderError:
            raise
        except (json.JSONDecodeError, ValueError, UnicodeDecodeError, LookupError) as exc:
            raise ProviderError("provider_malformed", f"{method} {url}: malformed answer: {exc}",
                                retryable=True) from None
        except TimeoutError:
            raise ProviderError("provider_timeout", f"{method} {url}: no answer in "
                                f"{self._timeout.total}s", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise ProviderError("provider_unreachable", f"{method} {url}: {exc!r}",
                                retryable=True) from None

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter; a Retry-After is a floor."""
        delay = random.uniform(0, min(self._backoff_cap, self._backoff_base * 2 ** attempt))
        return max(delay, retry_after or 0.0)

    # --- the job -----------------------------------------------------------------------

    async def generate(self, spec: JobSpec, job: JobHandle, workdir: Path) -> Output:
        prediction_id = job.provider_job_id
        if prediction_id is None:
            prediction_id = await self._submit(spec, job)
        prediction = await self._wait(prediction_id, job)
        output = prediction.get("output")
        url = output if isinstance(output, str) else (
            output[0] if isinstance(output, list) and output and isinstance(output[0], str)
            else None)
        if not url:
            raise ProviderError("no_output", "the prediction succeeded without an output",
                                retryable=True, resubmit=True)
        target = workdir / "video.mp4"
        await self._download(url, target)
        return Output(video=target, thumbnail=None)

    async def _submit(self, spec: JobSpec, job: JobHandle) -> str:
        body = {"input": self._input(spec)}
        earlier = await job.mark_submitting()
        if earlier is not None:
            adopted = await self._find(body["input"], since=earlier)
            if adopted is not None:
                await job.remember_provider_job(adopted)
                return adopted
        model = spec.provider_model or "influgen/short-video"
        created = await self._call("POST", f"/v1/models/{model}/predictions", body)
        prediction_id = created.get("id")
        if not isinstance(prediction_id, str) or not prediction_id:
            raise ProviderError("provider_malformed", "the create answer has no id",
                                retryable=True)
        await job.remember_provider_job(prediction_id)
        return prediction_id

    async def _find(self, input_: dict[str, Any], since: str) -> str | None:
        """A prediction with this input created since `since`: a create that a crash cut off."""
        started = datetime.fromisoformat(since)
        try:
            listing = await self._call("GET", "/v1/predictions")
        except ProviderError:
            return None
        for item in listing.get("results", []):
            try:
                created = datetime.fromisoformat(str(item.get("created_at")).replace("Z", "+00:00"))
            except ValueError:
                continue
            same = item.get("input") == input_ and isinstance(item.get("id"), str)
            if same and created >= started:
                return str(item["id"])
        return None

    async def _wait(self, prediction_id: str, job: JobHandle) -> dict[str, Any]:
        failures = 0
        while True:
            try:
                prediction = await self._call("GET", f"/v1/predictions/{prediction_id}")
                failures = 0
            except ProviderError as exc:
                if not exc.retryable:
                    raise
                failures += 1
                if failures > self._max_poll_failures:
                    raise
                await asyncio.sleep(self.backoff(failures, exc.retry_after))
                continue
            status = prediction.get("status")
            if status == "succeeded":
                return prediction
            if status == "failed":
                reason = str(prediction.get("error") or "the prediction failed")
                if _SAFETY.search(reason):
                    raise ProviderError("safety_refusal", reason, retryable=False)
                raise ProviderError("provider_failed", reason, retryable=True, resubmit=True)
            if status == "canceled":
                raise ProviderError("provider_canceled", "the prediction was canceled",
                                    retryable=False)
            if status not in ("starting", "processing"):
                raise ProviderError("provider_malformed", f"unknown status {status!r}",
                                    retryable=True)
            await job.progress(50 if status == "processing" else 5)
            await asyncio.sleep(self._poll_interval)

    async def _download(self, url: str, target: Path) -> None:
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=300)) as resp:
                if resp.status in (404, 410):
                    raise ProviderError("output_expired", f"the output URL answers {resp.status}",
                                        retryable=True, resubmit=True)
                if resp.status >= 400:
                    raise ProviderError("output_unavailable", f"output: HTTP {resp.status}",
                                        retryable=True, retry_after=_retry_after(resp))
                too_large = ProviderError(
                    "bad_output", f"the output is larger than {self._max_output_bytes} bytes",
                    retryable=False)
                if (resp.content_length or 0) > self._max_output_bytes:
                    raise too_large
                written = 0
                with target.open("wb") as out:
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        written += len(chunk)
                        if written > self._max_output_bytes:  # a length it did not announce
                            raise too_large
                        out.write(chunk)
        except ProviderError:
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderError("output_unavailable", f"downloading the output: {exc!r}",
                                retryable=True) from None

    async def cancel(self, provider_job_id: str) -> None:
        with contextlib.suppress(ProviderError):  # best effort: the job ends on our side anyway
            await self._call("POST", f"/v1/predictions/{provider_job_id}/cancel")
