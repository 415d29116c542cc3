"""What request handlers share: settings, the engine, the clock, the token key, caches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.config import Settings
from billetterie.shared.clock import Clock


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    clock: Clock
    token_key: str
    caches: dict[str, Any] = field(default_factory=dict)
