"""Slack emoji names <-> unicode, for reactions and for `:shortcodes:` in message text.

Slack names its emoji after iamcal/emoji-data (`+1`, `simple_smile`, `flag-us`,
`man-woman-boy`, `+1::skin-tone-2`); the `emoji` package knows GitHub-style aliases and CLDR
names. Most names agree, so the package does the heavy lifting and the tables below cover only
the places where Slack's names differ. Matrix reactions carry the unicode itself, with or
without the U+FE0F variation selector depending on the client, so look-ups ignore it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

from ..lazy import lazy

if TYPE_CHECKING:
    import emoji as _emoji
else:
    # The package's tables are a few MiB: read when the first emoji is looked up.
    _emoji = lazy("emoji")

VS16 = "\ufe0f"
ZWJ = "\u200d"
# Slack numbers the Fitzpatrick modifiers 2-6 (1 is the default, yellow, hand).
SKIN_TONES = {
    "skin-tone-2": "\U0001f3fb",
    "skin-tone-3": "\U0001f3fc",
    "skin-tone-4": "\U0001f3fd",
    "skin-tone-5": "\U0001f3fe",
    "skin-tone-6": "\U0001f3ff",
}
_TONE_NAMES = {char: name for name, char in SKIN_TONES.items()}
_REGIONAL_A = 0x1F1E6
# What a Slack emoji name may contain; anything else would let a stray colon reach emojize().
_NAME = re.compile(r"[a-z0-9_+'-]+")

# Slack names the `emoji` package does not know (older emoji-data names, Slack's own picks).
SLACK_NAMES: dict[str, str] = {
    "simple_smile": "🙂",
    "the_horns": "🤘",
    "spock-hand": "🖖",
    "face_palm": "🤦",
    "smiling_face_with_3_hearts": "🥰",
    "hand_with_index_and_middle_fingers_crossed": "🤞",
    "grinning_face_with_star_eyes": "🤩",
    "serious_face_with_symbols_on_mouth": "🤬",
    "face_with_symbols_on_mouth": "🤬",
    "shocked_face_with_exploding_head": "🤯",
    "face_with_finger_covering_closed_lips": "🤫",
    "smiling_face_with_smiling_eyes_and_hand_covering_mouth": "🤭",
    "face_with_open_mouth_vomiting": "🤮",
    "face_with_cowboy_hat": "🤠",
    "knife_fork_plate": "🍽️",
    "mostly_sunny": "🌤️",
    "barely_sunny": "🌥️",
    "partly_sunny_rain": "🌦️",
    "keycap_star": "*️⃣",
    "male-doctor": "👨‍⚕️",
    "female-doctor": "👩‍⚕️",
}
# The name Slack itself uses for an emoji where the package's first alias is another one;
# Slack accepts its aliases too, but its canonical names are what its clients show and send.
SLACK_CANONICAL: dict[str, str] = {
    "👍": "+1",
    "👎": "-1",
    "😄": "smile",
    "😆": "laughing",
    "💩": "hankey",
    "🤘": "the_horns",
    "🖖": "spock-hand",
    "🤦": "face_palm",
    "🥰": "smiling_face_with_3_hearts",
    "🤩": "star-struck",
    "🤬": "face_with_symbols_on_mouth",
    "🤯": "exploding_head",
    "🤫": "shushing_face",
    "🤭": "face_with_hand_over_mouth",
    "🤮": "face_vomiting",
    "🤠": "face_with_cowboy_hat",
    "🤪": "zany_face",
}


def _strip_vs(text: str) -> str:
    return text.replace(VS16, "")


# Message text repeats the same few names; emojize() scans its whole table on every call.
@lru_cache(maxsize=2048)
def _lookup(name: str) -> str | None:
    """One Slack name (no skin tone) -> unicode, trying the spellings Slack's names come in."""
    if name in SLACK_NAMES:
        return SLACK_NAMES[name]
    if not _NAME.fullmatch(name):
        return None
    if name.startswith("flag-") and len(name) == 7 and name[5:].isalpha() and name.isascii():
        # Slack names every flag `flag-<ISO 3166 code>`; the flag is two regional indicators.
        flag = "".join(chr(_REGIONAL_A + ord(c) - ord("a")) for c in name[5:].lower())
        return flag if _emoji.is_emoji(flag) else None
    underscored = name.replace("-", "_")
    candidates = [name, underscored]
    # emoji-data's `male-technologist` / `female-detective` are CLDR's `man_` / `woman_`.
    for old, new in (("male_", "man_"), ("female_", "woman_")):
        if underscored.startswith(old):
            candidates.append(new + underscored[len(old):])
    # emoji-data names families by their members (`man-woman-boy`), CLDR adds `family_`.
    if "-" in name and all(part in {"man", "woman", "boy", "girl"} for part in name.split("-")):
        candidates.append("family_" + underscored)
    for candidate in candidates:
        for language in ("alias", "en"):
            shortcode = f":{candidate}:"
            found = _emoji.emojize(shortcode, language=language)
            if found != shortcode and _emoji.is_emoji(found):
                return found
    return None


def _with_tone(base: str, tone: str) -> str:
    """Put a skin-tone modifier on an emoji, after its first code point (as ZWJ sequences
    such as 🙋‍♀️ require), dropping the presentation selector the modifier replaces."""
    first, rest = base[0], base[1:]
    if rest.startswith(VS16):
        rest = rest[1:]
    toned = first + tone + rest
    # Not every emoji takes a skin tone; the plain emoji beats a broken sequence.
    return toned if _emoji.is_emoji(toned) else base


def shortcode_to_unicode(name: str) -> str | None:
    """A Slack emoji name (`+1`, `heart`, `+1::skin-tone-2`, with or without the colons)
    -> its unicode, or None for custom workspace emoji and unknown names."""
    name = name.strip().strip(":").lower()
    if not name:
        return None
    base_name, _, tone_name = name.partition("::")
    if base_name in SKIN_TONES and not tone_name:
        return SKIN_TONES[base_name]
    base = _lookup(base_name)
    if base is None:
        return None
    if tone_name in SKIN_TONES:
        return _with_tone(base, SKIN_TONES[tone_name])
    return base


def _data(char: str) -> dict | None:
    for candidate in (char, char + VS16, _strip_vs(char)):
        data = _emoji.EMOJI_DATA.get(candidate)
        if data is not None:
            return data
    return None


def _name_of(char: str) -> str | None:
    bare = _strip_vs(char)
    if bare in SLACK_CANONICAL:
        return SLACK_CANONICAL[bare]
    if len(bare) == 2 and all(0 <= ord(c) - _REGIONAL_A < 26 for c in bare):
        return "flag-" + "".join(chr(ord(c) - _REGIONAL_A + ord("a")) for c in bare)
    data = _data(char)
    if data is None:
        return None
    english = data["en"].strip(":")
    if english.startswith("family_") and ZWJ in bare:
        # The reverse of the family rule in _lookup: 👨‍👩‍👦 is Slack's `man-woman-boy`.
        return english[len("family_"):].replace("_", "-")
    aliases = data.get("alias") or [data["en"]]
    return aliases[0].strip(":")


def unicode_to_shortcode(char: str) -> str | None:
    """A unicode emoji (a Matrix reaction key) -> the Slack name to react with (no colons),
    e.g. "❤️" and "❤" -> "heart", "👍🏽" -> "+1::skin-tone-4"; None if it is not one emoji."""
    char = char.strip()
    if not char:
        return None
    if char in _TONE_NAMES:
        return _TONE_NAMES[char]
    tones = [c for c in char if c in _TONE_NAMES]
    base = "".join(c for c in char if c not in _TONE_NAMES)
    name = _name_of(base)
    if name is None and tones:
        # A modifier may have eaten the selector the plain form needs (☝🏻 -> ☝️).
        name = _name_of(base[0] + VS16 + base[1:])
    if name is None:
        return None
    # Slack's reaction names carry one tone; multi-person emoji with two tones keep the first.
    return f"{name}::{_TONE_NAMES[tones[0]]}" if tones else name
