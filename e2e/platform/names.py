"""Names people read: account names and verified business display names (SPEC.md §10.1,
§13.3).

A name is shown to people, who cannot see bytes, so it must have one visible form:

* **Normalised.** UTF-8, in Unicode Normalization Form C, and unchanged by NFKC too (no
  compatibility characters: fullwidth or mathematical letters, ligatures, superscripts,
  which look like other letters).
* **Nothing invisible.** No character of the general categories Cc (controls, NUL among
  them), Cf (format: bidirectional overrides and isolates, zero-width joiners), Cs, Co, Cn
  (surrogates, private use, unassigned), Zl or Zp; the only space is U+0020, never at either
  end or twice in a row. Account names have no space at all.
* **One script** (the mixed-script rule of UTS #39 §5.2, at its *Highly Restrictive*
  level): the letters, marks and digits come from a single script, or from one of the
  combinations one writing system uses (Han with Hiragana and Katakana for Japanese, Han
  with Hangul for Korean, Han with Bopomofo for Chinese); punctuation, symbols and the
  ASCII digits are common to all. ``PаyBank`` with a Cyrillic ``а`` mixes Latin and
  Cyrillic and is refused. A letter's script is read from its Unicode character name (the
  UCD ``Name`` of every letter of these scripts begins with the script's name: ``LATIN
  SMALL LETTER A``, ``CYRILLIC SMALL LETTER A``, ``CJK UNIFIED IDEOGRAPH-4E00``); a letter
  whose name names no script is refused.

What this does not catch: a name written wholly in one script that looks like a name in
another (Cyrillic ``аре`` beside Latin ``ape``, UTS #39's whole-script confusables). A
verified business name is vetted by the platform before it certifies it (SPEC §13.3); the
rule here makes sure that what it vetted is what every client shows.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from e2e.errors import InvalidName

__all__ = ["check_account_name", "check_display_name", "scripts_of"]

#: General categories never allowed in a name.
_INVISIBLE: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
#: First words of character names that are a script, by the script they name.
_SCRIPT_WORDS: Final = {
    "LATIN": "Latin", "GREEK": "Greek", "COPTIC": "Coptic", "CYRILLIC": "Cyrillic",
    "ARMENIAN": "Armenian", "HEBREW": "Hebrew", "ARABIC": "Arabic",
    "ARABIC-INDIC": "Arabic", "EXTENDED": "Arabic", "SYRIAC": "Syriac", "THAANA": "Thaana",
    "DEVANAGARI": "Devanagari", "BENGALI": "Bengali", "GURMUKHI": "Gurmukhi",
    "GUJARATI": "Gujarati", "ORIYA": "Oriya", "TAMIL": "Tamil", "TELUGU": "Telugu",
    "KANNADA": "Kannada", "MALAYALAM": "Malayalam", "SINHALA": "Sinhala", "THAI": "Thai",
    "LAO": "Lao", "TIBETAN": "Tibetan", "MYANMAR": "Myanmar", "GEORGIAN": "Georgian",
    "HANGUL": "Hangul", "ETHIOPIC": "Ethiopic", "KHMER": "Khmer", "MONGOLIAN": "Mongolian",
    "HIRAGANA": "Hiragana", "KATAKANA": "Katakana", "BOPOMOFO": "Bopomofo", "CJK": "Han",
}  # fmt: skip
#: Scripts that one writing system mixes (UTS #39 §5.2, Highly Restrictive).
_WRITING_SYSTEMS: Final = (
    frozenset({"Han", "Hiragana", "Katakana"}),
    frozenset({"Han", "Hangul"}),
    frozenset({"Han", "Bopomofo"}),
)
#: Marks of no script of their own (combining accents), allowed after a letter.
_INHERITED: Final = "COMBINING"


def _script(ch: str) -> str | None:
    """The script of a letter, mark or digit; None for what every script shares."""
    cat = unicodedata.category(ch)
    if cat[0] not in "LMN" or ("0" <= ch <= "9"):
        return None
    word = unicodedata.name(ch, "").split(" ", 1)[0]
    if cat[0] == "M" and word == _INHERITED:
        return None
    script = _SCRIPT_WORDS.get(word)
    if script is None:
        raise InvalidName(f"a name holds a character of no known script (U+{ord(ch):04X})")
    return script


def scripts_of(text: str) -> frozenset[str]:
    """The scripts of ``text``'s letters, marks and digits (common characters not counted)."""
    return frozenset(s for ch in text if (s := _script(ch)) is not None)


def _check(raw: bytes, what: str, spaces: bool) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidName(f"{what} is not UTF-8") from None
    if not text:
        raise InvalidName(f"{what} is empty")
    if not unicodedata.is_normalized("NFC", text) or unicodedata.normalize("NFKC", text) != text:
        raise InvalidName(f"{what} is not in normalization forms NFC and NFKC")
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in _INVISIBLE:
            raise InvalidName(f"{what} holds an invisible or control character (U+{ord(ch):04X})")
        if cat == "Zs" and (ch != " " or not spaces):
            raise InvalidName(f"{what} holds a space")
    if spaces and (text != text.strip(" ") or "  " in text):
        raise InvalidName(f"{what} has a space at an end or two in a row")
    found = scripts_of(text)
    if len(found) > 1 and not any(found <= ws for ws in _WRITING_SYSTEMS):
        raise InvalidName(f"{what} mixes scripts ({', '.join(sorted(found))})")
    return text


def check_account_name(raw: bytes) -> str:
    """An account name as registered: the rules above, and no space. Returns the text;
    :class:`InvalidName` otherwise."""
    return _check(raw, "account name", spaces=False)


def check_display_name(raw: bytes) -> str:
    """A business's display name as the platform certifies it: the rules above (single
    spaces allowed). Returns the text; :class:`InvalidName` otherwise."""
    return _check(raw, "display name", spaces=True)
