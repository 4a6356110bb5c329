from __future__ import annotations

from shared.settings import CommonSettings


class GeneratorSettings(CommonSettings):
    consumer_group: str = "influgen-generator"
    #: Jobs one generator process drives at once.
    concurrency: int = 2
    #: Processes rendering `local` videos (CPU work off the event loop).
    render_processes: int = 1
    #: A job whose lease is not renewed for this long is taken over by another process.
    lease_seconds: float = 30.0
    poll_interval_seconds: float = 0.25
    #: libx264 preset of the local renderer.
    x264_preset: str = "veryfast"
