"""The detailed catalog served from memory, per sales channel, scope and version.

The catalog is built when the setup changes and stored as JSON (see
``catalog.services.rebuild_catalogs``). A process keeps the last version it served for each
(channel, scope): the JSON bytes, the full S-360 response without its tail, that head already
gzipped, and the parsed document for filtered calls. Per request it reads one small row (the
version) from the database, so every process answers with the current catalog.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.catalog.models import CatalogScope
from billetterie.catalog.services import SnapshotVersion, snapshot_body, snapshot_version
from billetterie.shared.db import read
from billetterie.shared.gzipjoin import GzipHead

HEAD_PREFIX = b'{"catalogData":'
HEAD_SUFFIX = b',"statusCode":"success","statusDetail":"OK"'


@dataclass
class CachedCatalog:
    version: int
    body: bytes  # catalogData as JSON
    updated_at: Any = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @cached_property
    def head(self) -> bytes:
        return HEAD_PREFIX + self.body + HEAD_SUFFIX

    @cached_property
    def gzip_head(self) -> GzipHead:
        return GzipHead.of(self.head)

    @cached_property
    def document(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed

    @cached_property
    def body_gzip(self) -> bytes:
        """catalogData alone, gzipped: what the GET mirror serves."""
        import gzip

        return gzip.compress(self.body, compresslevel=6, mtime=0)

    @staticmethod
    def tail(request_id: str | None) -> bytes:
        if request_id is None:
            return b"}"
        return b',"requestId":' + orjson.dumps(request_id) + b"}"

    def response(self, request_id: str | None, *, gzip: bool) -> bytes:
        tail = self.tail(request_id)
        return self.gzip_head.finish(tail) if gzip else self.head + tail


class CatalogCache:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._entries: dict[tuple[int, CatalogScope], CachedCatalog] = {}
        self._loading: dict[tuple[int, CatalogScope], asyncio.Lock] = {}

    async def version(self, sales_channel_id: int, scope: CatalogScope) -> SnapshotVersion:
        async with read(self.engine) as conn:
            return await snapshot_version(conn, sales_channel_id, scope)

    async def get(self, sales_channel_id: int, scope: CatalogScope) -> CachedCatalog:
        """The current catalog of a channel; loads it from the database when it moved."""
        current = await self.version(sales_channel_id, scope)
        key = (sales_channel_id, scope)
        entry = self._entries.get(key)
        if entry is not None and entry.version == current.version:
            return entry
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:  # one load per process, however many callers wait
            entry = self._entries.get(key)
            if entry is not None and entry.version == current.version:
                return entry
            async with read(self.engine) as conn:
                version, body = await snapshot_body(conn, sales_channel_id, scope)
            entry = CachedCatalog(version, body, current.updated_at)
            await asyncio.to_thread(lambda: entry.gzip_head)  # compress off the event loop
            self._entries[key] = entry
            return entry
