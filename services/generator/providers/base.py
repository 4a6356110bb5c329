"""The provider port: what the generator needs from anything that makes a video."""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from pathlib import Path

from shared.events import JobSpec

#: Characters of a provider's error message kept (the job's error, and the events with it).
MAX_MESSAGE = 2000
#: The longest a provider's Retry-After may put a retry off (a job's deadline may end it
#: sooner).
MAX_RETRY_AFTER = 3600.0


class ProviderError(Exception):
    """A provider failure with a stable code; `retryable` says whether trying again helps;
    `retry_after`, the provider's wait in seconds, if it gave a usable one (finite, not
    negative; at most `MAX_RETRY_AFTER`)."""

    def __init__(self, code: str, message: str, *, retryable: bool,
                 retry_after: float | None = None, resubmit: bool = False) -> None:
        # A provider's own text may hold U+0000, which the job's stored error cannot, and be
        # of any length, which the video's events (that carry it) cannot.
        code, message = code.replace("\x00", "\ufffd"), message.replace("\x00", "\ufffd")
        code = code[:100]
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + "…"
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after: float | None = None
        if retry_after is not None and math.isfinite(retry_after) and retry_after >= 0:
            self.retry_after = min(retry_after, MAX_RETRY_AFTER)
        #: The provider's job is over (failed, expired output): a retry must submit anew.
        self.resubmit = resubmit


@dataclass(frozen=True)
class Output:
    """Files the provider produced: in the job's scratch directory, or files the provider
    keeps and never modifies (the sandbox's cached clips). The generator reads them only."""

    video: Path
    thumbnail: Path | None


class JobHandle(abc.ABC):
    """What a provider may tell the generator while it works."""

    @abc.abstractmethod
    async def progress(self, percent: int) -> None: ...

    @abc.abstractmethod
    async def remember_provider_job(self, provider_job_id: str) -> None:
        """Persist the provider's id before waiting on it, so a restart resumes, not resubmits."""

    @property
    @abc.abstractmethod
    def provider_job_id(self) -> str | None: ...

    @abc.abstractmethod
    async def mark_submitting(self) -> str | None:
        """Record that a submission starts; return when an earlier one started (a crash
        may have left it without a stored id), or None."""


class Provider(abc.ABC):
    name: str
    #: Whether `generate` writes into its `workdir`; the directory is made only if so (a
    #: provider that hands over files it keeps, the sandbox, saves two file system calls).
    uses_workdir: bool = True
    #: Whether storing the output takes only a few system calls (files the provider keeps,
    #: with a thumbnail, linked into the store; their probe remembered): then it runs on the
    #: event loop instead of a worker thread, whose two hand-offs of the GIL cost more on a
    #: busy machine (sandbox at 200 jobs/s: claim to success p50 13-15 ms -> 7 ms).
    stores_quickly: bool = False

    @abc.abstractmethod
    async def generate(self, spec: JobSpec, job: JobHandle, workdir: Path) -> Output:
        """Produce the video (and a thumbnail if the provider makes one) under `workdir`,
        or hand over files the provider keeps (see `Output`)."""

    async def cancel(self, provider_job_id: str) -> None:  # noqa: B027 - optional
        """Stop the provider's job, where the provider can."""
