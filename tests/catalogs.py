"""Catalog variants for tests."""

from __future__ import annotations

import json
from pathlib import Path

from shared.settings import ROOT


def small_hosted_catalog(directory: Path) -> Path:
    """The real catalog, with the hosted model at 144p so that stand-in outputs render fast."""
    data = json.loads((ROOT / "deploy" / "catalog.json").read_text())
    for model in data["models"]:
        if model["provider"] == "replicate":
            for tier in model["tiers"].values():
                tier["short_side"] = 144
    path = directory / "catalog.json"
    path.write_text(json.dumps(data))
    return path
