"""Call allowances: at most N calls per window for one key, counted in fixed windows.

The counters live in the ``limits`` library's async storage: in process memory (each process
counts on its own) or in Redis (every process shares the counters). A window opens at the first
call of a key and lasts ``window_seconds``; each call is one atomic ``INCR`` (with ``EXPIRE`` on
the first), which answers both "allowed?" and "how many are left?" in one round trip. A refused
call costs one more read, the key's expiry, for ``Retry-After``.

Fixed windows rather than ``limits``' moving window or sliding-window counter: one integer per
key and one round trip per call (the moving window keeps up to N timestamps per key and its
in-memory storage sweeps them in threads; the sliding counter is an approximation that lets a
call through or not depending on where the clock falls); ``Retry-After`` is exact. The price: a
caller may fit up to 2N calls in a short span straddling two windows, as in any fixed window.

``limits``' in-memory storage sweeps every key for expired ones after each call, which costs
O(keys) per call (1.7 ms per call with 10,000 live keys, measured); :class:`MemoryStorage` sweeps
at most once per ``SWEEP_SECONDS`` instead (an expired key is also dropped when next touched).

The storage failing (Redis down or slow) never refuses a call: :meth:`RateLimiter.hit` answers
``None`` (not counted), logs one warning, and stops asking the storage for
``FAIL_OPEN_SECONDS`` so a dead Redis costs nothing per call.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from limits import RateLimitItemPerSecond
from limits.aio import storage as limits_storage
from limits.aio.storage import RedisStorage, Storage

from billetterie.config import Settings

logger = logging.getLogger("billetterie.ratelimit")

FAIL_OPEN_SECONDS = 5.0
REDIS_TIMEOUT_SECONDS = 0.25
SWEEP_SECONDS = 1.0


class MemoryStorage(limits_storage.MemoryStorage):
    """``limits``' memory storage, sweeping expired keys at most once per ``SWEEP_SECONDS``."""

    _next_sweep = 0.0

    # Overrides the private (name-mangled) hook MemoryStorage calls after every counted call;
    # tests/test_rate_limits.py checks that it still exists.
    async def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_SECONDS
            await super()._MemoryStorage__schedule_expiry()  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Allowance:
    """The outcome of one counted call. ``retry_after`` (seconds, >= 1) is set when refused."""

    allowed: bool
    limit: int
    remaining: int
    retry_after: int = 0


class RateLimiter:
    """Counts calls per key in fixed windows of ``window_seconds``.

    ``default_limit`` and ``auth_limit`` are the settings' allowances, kept here for the
    surfaces that apply them; :meth:`hit` itself takes the limit to apply.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        window_seconds: int,
        default_limit: int,
        auth_limit: int,
        fail_open_seconds: float = FAIL_OPEN_SECONDS,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.storage = storage
        self.window_seconds = window_seconds
        self.default_limit = default_limit
        self.auth_limit = auth_limit
        self.fail_open_seconds = fail_open_seconds
        self._on_close = on_close
        self._items: dict[int, RateLimitItemPerSecond] = {}
        self._unchecked_until = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter | None:
        """The limiter the settings ask for: None when limits are off; Redis when
        ``redis_url`` is set, process memory otherwise. Opens no connection yet."""
        if not settings.rate_limits:
            return None
        storage: Storage
        on_close = None
        if settings.redis_url:
            from redis.asyncio import ConnectionPool

            url = settings.redis_url.removeprefix("async+")
            # Short timeouts and no retries: a slow Redis must fail open quickly.
            pool = ConnectionPool.from_url(
                url,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
            storage = RedisStorage(
                "async+" + url,
                implementation="redispy",
                key_prefix=settings.rate_limit_key_prefix,
                connection_pool=pool,  # type: ignore[arg-type]  # passed through to redis-py
            )
            on_close = pool.aclose
        else:
            storage = MemoryStorage()
        return cls(
            storage,
            window_seconds=settings.rate_limit_window_seconds,
            default_limit=settings.rate_limit_per_minute,
            auth_limit=settings.rate_limit_auth_per_minute,
            on_close=on_close,
        )

    async def close(self) -> None:
        """Release the storage: the Redis connections, or the memory storage's sweeper task."""
        if self._on_close is not None:
            await self._on_close()
        timer = getattr(self.storage, "timer", None)
        if timer is not None and not timer.done():
            timer.cancel()

    def _item(self, limit: int) -> RateLimitItemPerSecond:
        item = self._items.get(limit)
        if item is None:
            item = self._items[limit] = RateLimitItemPerSecond(
                limit, self.window_seconds, namespace="calls"
            )
        return item

    async def hit(self, limit: int, *key: str | int) -> Allowance | None:
        """Count one call against ``key`` (parts joined with ``/``) allowed ``limit`` times per
        window. None when the storage could not be reached: the call is let through uncounted.

        Refused calls are counted too (they do not extend the window): ``remaining`` stays 0.
        """
        if self._unchecked_until and time.monotonic() < self._unchecked_until:
            return None
        item = self._item(limit)
        storage_key = item.key_for(*key)
        try:
            count = await self.storage.incr(storage_key, item.get_expiry())
            if count <= limit:
                return Allowance(True, limit, limit - count)
            reset_at = await self.storage.get_expiry(storage_key)
        except Exception as exc:  # fail open, whatever the storage raised
            self._unchecked_until = time.monotonic() + self.fail_open_seconds
            logger.warning(
                "rate-limit storage unavailable (%s: %s); calls are let through unlimited "
                "for %.0f s",
                type(exc).__name__,
                exc,
                self.fail_open_seconds,
            )
            return None
        retry_after = max(1, min(self.window_seconds, math.ceil(reset_at - time.time())))
        return Allowance(False, limit, 0, retry_after)
