from __future__ import annotations

import pytest

from services.api.scene import ASPECTS, scene_feedback


@pytest.mark.parametrize(
    ("text", "present"),
    [
        ("Walking through a marble hotel lobby at golden hour, subtle camera push-in, confident "
         "luxury travel energy, soft motion in the dress, cinematic but social-first.",
         {"setting", "action", "mood", "framing", "pacing"}),
        ("a woman", set()),
        ("Dancing on a rooftop at night", {"setting", "action"}),
        ("Handheld close-up, quick cuts on the beat", {"framing", "pacing"}),
        ("Cozy and calm vibe", {"mood"}),
        ("She sits in the kitchen, slow motion", {"action", "setting", "pacing"}),
        ("Wide shot of the beach", {"framing", "setting"}),
        ("Unboxing sneakers, playful mood, time-lapse", {"action", "mood", "pacing"}),
    ],
)
def test_aspects_found(text: str, present: set[str]) -> None:
    feedback = scene_feedback(text)
    assert set(feedback.present) == present
    assert set(feedback.missing) == set(ASPECTS) - present
    assert set(feedback.hints) == set(feedback.missing)
    assert all(len(h) > 20 for h in feedback.hints.values())


def test_words_inside_other_words_do_not_count() -> None:
    # "pan" in "panel", "bar" in "barely", "car" in "scarf": no false framing/setting.
    feedback = scene_feedback("panel scarf barely")
    assert feedback.present == []
