"""What the handlers of one server process share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie_wallet.clock import Clock
from billetterie_wallet.config import WalletSettings


@dataclass
class Runtime:
    settings: WalletSettings
    engine: AsyncEngine
    clock: Clock
    secret: str

    @property
    def deletion_timeout(self) -> timedelta:
        return timedelta(seconds=self.settings.deletion_timeout_seconds)

    def base_url(self, request: Request) -> str:
        return self.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")


def runtime(request: Request) -> Runtime:
    value: Runtime = request.app.state.runtime
    return value
