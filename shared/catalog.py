"""The model catalog (`deploy/catalog.json`): providers, tiers, rates and limits."""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from shared.events import AspectRatio, QualityTier

_RATIOS: dict[str, tuple[int, int]] = {"9:16": (9, 16), "1:1": (1, 1), "16:9": (16, 9)}


def _even(value: float) -> int:
    return int(math.ceil(value / 2) * 2)


def frame_size(short_side: int, aspect_ratio: str) -> tuple[int, int]:
    """(width, height) with `short_side` on the short side, both even (yuv420p needs it)."""
    w, h = _RATIOS[aspect_ratio]
    if w == h:
        return short_side, short_side
    long_side = _even(short_side * max(w, h) / min(w, h))
    return (long_side, short_side) if w > h else (short_side, long_side)


class Tier(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    short_side: int
    credits_per_second: float


class ModelEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    provider: str
    provider_model: str | None = None
    description: str
    fps: int
    min_duration_seconds: int
    max_duration_seconds: int
    aspect_ratios: list[AspectRatio]
    tiers: dict[QualityTier, Tier]

    def quote(self, tier: QualityTier, duration_seconds: int) -> int:
        return math.ceil(self.tiers[tier].credits_per_second * duration_seconds)

    def frame_size(self, tier: QualityTier, aspect_ratio: str) -> tuple[int, int]:
        return frame_size(self.tiers[tier].short_side, aspect_ratio)


class Catalog(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    default_model: str
    models: list[ModelEntry]

    @model_validator(mode="after")
    def _default_exists(self) -> Catalog:
        if self.get(self.default_model) is None:
            raise ValueError(f"default_model {self.default_model!r} is not in the catalog")
        return self

    def get(self, model_id: str) -> ModelEntry | None:
        return next((m for m in self.models if m.id == model_id), None)

    def by_provider(self, provider: str) -> ModelEntry | None:
        return next((m for m in self.models if m.provider == provider), None)

    @classmethod
    def load(cls, path: Path) -> Catalog:
        return cls.model_validate_json(path.read_text())
