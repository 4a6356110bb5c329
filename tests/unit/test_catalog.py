from __future__ import annotations

import pytest

from shared.catalog import Catalog, frame_size
from shared.settings import ROOT


@pytest.mark.parametrize(
    ("short", "aspect", "size"),
    [(480, "9:16", (480, 854)), (720, "9:16", (720, 1280)), (1080, "9:16", (1080, 1920)),
     (720, "16:9", (1280, 720)), (720, "1:1", (720, 720)), (144, "9:16", (144, 256))],
)
def test_frame_sizes_are_even_and_keep_the_ratio(short: int, aspect: str,
                                                 size: tuple[int, int]) -> None:
    assert frame_size(short, aspect) == size


def test_quote_rounds_up() -> None:
    catalog = Catalog.load(ROOT / "deploy" / "catalog.json")
    model = catalog.get("influgen-preview-1")
    assert model is not None
    assert model.quote("draft", 5) == 3
    assert model.quote("premium", 8) == 16


def test_catalog_default_must_exist() -> None:
    with pytest.raises(ValueError, match="default_model"):
        Catalog.model_validate({"default_model": "nope", "models": []})
