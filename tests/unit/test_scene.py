from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.api.scene import _NOT_PLACES, _WORDS, ASPECTS, scene_feedback


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


# The regular expressions scene feedback used before it split the description into words
# (services/api/scene.py): the reference the faster matching must agree with.
_REFERENCE_PATTERNS = {
    aspect: re.compile(
        r"(?<![\w-])(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        + r")(?![\w-])", re.IGNORECASE)
    for aspect, words in _WORDS.items()
}
_REFERENCE_SETTING = re.compile(
    r"\b(in|at|on|inside|outside|through|across|by|near) (a|an|the|her|his|their) "
    r"(?!(?:" + "|".join(_NOT_PLACES) + r")\b)\w+", re.IGNORECASE)


def _reference_present(text: str) -> set[str]:
    return {a for a in ASPECTS if _REFERENCE_PATTERNS[a].search(text)
            or (a == "setting" and _REFERENCE_SETTING.search(text))}


_PHRASES = sorted({w for words in _WORDS.values() for w in words if " " in w})
_SINGLE_WORDS = sorted({w for words in _WORDS.values() for w in words if " " not in w})
_PREPOSITIONS = ["in", "at", "on", "by", "near", "inside", "across", "outside", "through",
                 "under", "xin"]
_DETERMINERS = ["a", "an", "the", "her", "his", "their", "my"]
_OTHERS = sorted({*_NOT_PLACES, "panel", "pan-fried", "x", "beatbox", "Café", "CAFÉ", "_", "9",
                  "ſtudio"})
_GAPS = [" ", " ", " ", "  ", ", ", "-", "\n", ". ", "", "\u00a0", "é", "_"]


def _cased(word: str) -> str:
    return word.upper() if len(word) % 3 == 0 else word.title() if len(word) % 3 == 1 else word


@st.composite
def _descriptions(draw: st.DrawFn) -> str:
    """A few parts, each a listed phrase, a "preposition determiner word" group (the setting
    pattern's, near misses included) or a single word, with random gaps within and between
    them: descriptions that name only some aspects, at boundaries that matter."""
    gap = st.sampled_from(_GAPS)

    def joined(words: list[str]) -> str:
        return "".join(w + draw(gap) for w in words[:-1]) + words[-1]

    phrase = st.sampled_from(_PHRASES).map(lambda p: p.split(" "))
    setting = st.tuples(st.sampled_from(_PREPOSITIONS), st.sampled_from(_DETERMINERS),
                        st.sampled_from([*_OTHERS, *_SINGLE_WORDS])).map(list)
    single = st.sampled_from([*_OTHERS, *_SINGLE_WORDS]).map(lambda w: [w])
    parts = draw(st.lists(st.one_of(phrase, setting, single), max_size=3))
    return draw(st.sampled_from(["", " ", "-", "("])) + "".join(
        joined([_cased(w) for w in part]) + draw(gap) for part in parts)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_descriptions(), st.text(max_size=80)))
def test_agrees_with_the_regular_expressions(text: str) -> None:
    assert set(scene_feedback(text).present) == _reference_present(text)


def test_agrees_on_every_phrase_and_setting_group() -> None:
    """Every listed phrase and every "preposition determiner word" group, with each gap
    (the random descriptions above may miss a particular one)."""
    texts = [g.join(_cased(w) for w in p.split(" ")) for p in _PHRASES for g in _GAPS]
    texts += [f"{p}{g}{d} {w}" for p in _PREPOSITIONS for d in _DETERMINERS
              for w in ("panel", "beat", "beatbox") for g in (" ", "  ", "-")]
    texts += [f"push-{p} the panel" for p in _PREPOSITIONS]
    for text in texts:
        assert set(scene_feedback(text).present) == _reference_present(text), text
