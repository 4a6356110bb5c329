"""Scene feedback: does a description read like a director's note?

A reasoned heuristic over word lists and patterns for the five parts of a good scene
(setting, action, mood, framing, pacing). It never blocks a request; it tells the client
which parts are present and gives a concrete hint for each missing one.
"""

from __future__ import annotations

import re

from shared.events import SceneFeedback

ASPECTS = ("setting", "action", "mood", "framing", "pacing")

_WORDS: dict[str, tuple[str, ...]] = {
    "setting": (
        "lobby", "hotel", "beach", "street", "kitchen", "studio", "cafe", "café", "rooftop",
        "park", "office", "gym", "city", "forest", "desert", "mountain", "mountains", "room",
        "bedroom", "bathroom", "living room", "apartment", "garden", "pool", "restaurant",
        "bar", "club", "stage", "runway", "market", "mall", "shop", "store", "boutique",
        "airport", "train", "car", "subway", "bridge", "alley", "balcony", "terrace",
        "library", "museum", "gallery", "lake", "river", "ocean", "sea", "field", "snow",
        "highway", "road", "yacht", "boat", "villa", "penthouse", "courtyard", "church",
        "golden hour", "sunset", "sunrise", "dawn", "dusk", "night", "midnight", "morning",
        "afternoon", "evening", "indoors", "outdoors", "neon", "skyline", "downtown",
    ),
    "action": (
        "walk", "walks", "walking", "run", "runs", "running", "dance", "dances", "dancing",
        "talk", "talks", "talking", "speaks", "speaking", "laughs", "laughing", "smiles",
        "smiling", "turns", "turning", "spins", "spinning", "pours", "pouring", "holds",
        "holding", "sips", "sipping", "drinks", "drinking", "eats", "eating", "cooks",
        "cooking", "jumps", "jumping", "waves", "waving", "points", "pointing", "unboxes",
        "unboxing", "applies", "applying", "tries on", "trying on", "poses", "posing",
        "sits", "sitting", "stands", "standing", "leans", "leaning", "reaches", "opens",
        "opening", "looks", "looking", "glances", "glancing", "stretches", "stretching",
        "lifts", "lifting", "rides", "riding", "drives", "driving", "swims", "swimming",
        "skates", "skating", "reveals", "revealing", "shows", "showing", "strolls",
        "strolling", "enters", "entering", "steps", "stepping", "twirls", "twirling",
    ),
    "mood": (
        "mood", "moody", "vibe", "vibes", "energy", "energetic", "calm", "serene", "cozy",
        "confident", "playful", "joyful", "happy", "cheerful", "dreamy", "romantic",
        "dramatic", "mysterious", "luxury", "luxurious", "elegant", "glamorous", "edgy",
        "bold", "relaxed", "chill", "intimate", "nostalgic", "whimsical", "fierce", "warm",
        "melancholic", "tense", "uplifting", "peaceful", "excited", "sultry", "fun",
        "atmosphere", "feel", "feeling", "aesthetic",
    ),
    "framing": (
        "close-up", "close up", "closeup", "wide shot", "wide angle", "medium shot",
        "full body", "full-body", "push-in", "push in", "pull-out", "pull out", "pan",
        "panning", "tilt", "tracking", "tracking shot", "dolly", "crane", "drone",
        "overhead", "top-down", "low angle", "high angle", "eye level", "pov", "handheld",
        "camera", "framing", "framed", "shot", "angle", "selfie", "over-the-shoulder",
        "centered", "rule of thirds", "zoom", "zooms", "orbit", "gimbal", "lens",
    ),
    "pacing": (
        "slow", "slowly", "slow motion", "slow-motion", "slo-mo", "fast", "quick", "quickly",
        "rapid", "quick cuts", "jump cut", "jump cuts", "time-lapse", "timelapse", "pace",
        "paced", "pacing", "rhythm", "rhythmic", "tempo", "beat", "on the beat", "steady",
        "gradual", "gradually", "subtle", "lingering", "lingers", "builds", "build-up",
        "smooth", "snappy", "seamless", "transition", "transitions", "hold", "holds on",
    ),
}

_HINTS: dict[str, str] = {
    "setting": "Say where and when it happens, e.g. 'in a marble hotel lobby at golden hour'.",
    "action": "Say what the character does, e.g. 'walking toward the camera, turning to smile'.",
    "mood": "Name the feeling or energy, e.g. 'confident luxury travel energy' or 'cozy and calm'.",
    "framing": "Describe the camera, e.g. 'medium shot, subtle push-in' or 'handheld close-up'.",
    "pacing": "Give the tempo, e.g. 'slow and lingering', 'quick cuts on the beat', 'time-lapse'.",
}

_PATTERNS: dict[str, re.Pattern[str]] = {
    aspect: re.compile(
        r"(?<![\w-])(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        + r")(?![\w-])",
        re.IGNORECASE,
    )
    for aspect, words in _WORDS.items()
}
# Settings are often phrased as a place after a preposition: "in a ...", "at the ...".
# Nouns after such a preposition that are not places ("on the beat", "at the camera").
_NOT_PLACES = ("beat", "camera", "lens", "screen", "way", "move", "go", "end", "moment",
               "same", "right", "left", "top", "bottom", "music", "rhythm", "time")
_SETTING_PHRASE = re.compile(
    r"\b(in|at|on|inside|outside|through|across|by|near) (a|an|the|her|his|their) "
    r"(?!(?:" + "|".join(_NOT_PLACES) + r")\b)\w+",
    re.IGNORECASE,
)


def scene_feedback(description: str) -> SceneFeedback:
    present = [
        aspect
        for aspect in ASPECTS
        if _PATTERNS[aspect].search(description)
        or (aspect == "setting" and _SETTING_PHRASE.search(description))
    ]
    missing = [a for a in ASPECTS if a not in present]
    return SceneFeedback(present=present, missing=missing, hints={a: _HINTS[a] for a in missing})
