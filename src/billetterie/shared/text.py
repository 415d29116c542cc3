"""Localised text: ``{"en": "...", "fr": "..."}`` inside, translation objects on the wire."""

from __future__ import annotations

from typing import Any

LocalText = dict[str, str]


def translations(text: LocalText | None) -> dict[str, list[dict[str, str]]] | None:
    """S-360's translation object, locales in a stable order."""
    if not text:
        return None
    return {"translations": [{"locale": k, "value": v} for k, v in sorted(text.items())]}


def pick(text: LocalText | None, language: str, fallback: str = "en") -> str:
    if not text:
        return ""
    return text.get(language) or text.get(fallback) or next(iter(text.values()))


def as_local_text(value: Any, default_language: str) -> LocalText:
    """A plain string means the main language; a mapping is taken as is."""
    if isinstance(value, str):
        return {default_language: value}
    return dict(value)
