from __future__ import annotations

from shared.settings import CommonSettings


class FinalizerSettings(CommonSettings):
    consumer_group: str = "influgen-finalizer"
