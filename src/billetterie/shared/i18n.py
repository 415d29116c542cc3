"""Words of the web pages in English, French and German, and the language a page speaks.

A page's words live in a table of its context (``shop.i18n``, ``identity.i18n``): key ->
(English, French, German). The language is the visitor's choice (``?lang=``, kept in the
``bt_lang`` cookie), one of the point of sale's languages, else the point of sale's first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

LANGUAGES = ("en", "fr", "de")
LANG_COOKIE = "bt_lang"

Words = Mapping[str, tuple[str, str, str]]


def lookup(words: Words, key: str, language: str) -> str:
    """The word in ``language`` (English for a language without words); the key itself when
    the table has no such word."""
    texts = words.get(key)
    if texts is None:
        return key
    index = LANGUAGES.index(language) if language in LANGUAGES else 0
    return texts[index]


def localized(value: Any, language: str) -> str:
    """A wire translation object (or a plain mapping) in ``language``, else English, else the
    first text there is."""
    if not value:
        return ""
    if isinstance(value, dict) and "translations" in value:
        texts = {t["locale"]: t["value"] for t in value["translations"]}
    elif isinstance(value, dict):
        texts = value
    else:
        return str(value)
    for lang in (language, "en"):
        if texts.get(lang):
            return str(texts[lang])
    return str(next(iter(texts.values()), ""))


def choose_language(allowed: Sequence[str], asked: str | None, kept: str | None) -> str:
    """``asked`` (``?lang=``) if offered, else ``kept`` (the cookie) if offered, else the first
    language offered (English when none is)."""
    offered = list(allowed) or ["en"]
    if asked is not None and asked in offered:
        return asked
    if kept is not None and kept in offered:
        return kept
    return offered[0]
