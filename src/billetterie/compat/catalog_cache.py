"""The detailed catalog served from memory, per sales channel, scope and version.

The catalog is built when the setup changes and stored as JSON with a summary (see
``catalog.services.rebuild_catalogs``). A process keeps the last version it served for each
(channel, scope): the S-360 response without its tail as one buffer (``catalogData`` is a view
into it), the catalog compressed once (``shared.gzipjoin``) for both the RPC envelope and the GET
mirror, and the small summary parsed. The whole document is parsed only for filtered calls, off
the event loop. Per request one small row (the version) is read, so every process answers with
the current catalog.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.catalog.models import CatalogScope
from billetterie.catalog.services import snapshot_body
from billetterie.shared.db import read
from billetterie.shared.gzipjoin import GzipHead, deflate_part

PREFIX = b'{"catalogData":'
SUFFIX = b',"statusCode":"success","statusDetail":"OK"'
CHUNK = 1 << 20


@dataclass
class CachedCatalog:
    version: int
    head: bytes  # PREFIX + catalogData + SUFFIX
    summary: dict[str, Any]
    updated_at: datetime | None = None
    rpc_gzip: GzipHead | None = None
    mirror_gzip: GzipHead | None = None
    _document: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, version: int, body: bytes, summary: bytes) -> CachedCatalog:
        """Everything a request needs; CPU-heavy (compression), so run it in a thread."""
        entry = cls(version, PREFIX + body + SUFFIX, orjson.loads(summary))
        data = entry.body
        deflated = deflate_part(data)
        entry.mirror_gzip = GzipHead.of_part(deflated, data)
        entry.rpc_gzip = GzipHead.of(PREFIX).then(deflated, data).then(deflate_part(SUFFIX), SUFFIX)
        return entry

    @property
    def body(self) -> memoryview:
        """catalogData as JSON, without a copy."""
        return memoryview(self.head)[len(PREFIX) : len(self.head) - len(SUFFIX)]

    @staticmethod
    def tail(request_id: str | None) -> bytes:
        if request_id is None:
            return b"}"
        return b',"requestId":' + orjson.dumps(request_id) + b"}"

    def rpc_chunks(self, request_id: str | None, *, gzip: bool) -> list[bytes | memoryview]:
        """The getCatalogDetailed response as buffers to send one after the other."""
        tail = self.tail(request_id)
        if gzip:
            assert self.rpc_gzip is not None
            return list(self.rpc_gzip.chunks(tail))
        return [*slices(memoryview(self.head)), tail]

    def mirror_chunks(self, *, gzip: bool) -> list[bytes | memoryview]:
        if gzip:
            assert self.mirror_gzip is not None
            return list(self.mirror_gzip.chunks(b""))
        return slices(self.body)

    @cached_property
    def product_ids(self) -> frozenset[int]:
        """The products of this catalog (the channel's, in this scope)."""
        return frozenset(p["id"] for season in self.summary["seasons"] for p in season["products"])

    async def document(self) -> dict[str, Any]:
        """The parsed catalogData (for filtered calls), parsed once, in a thread."""
        if self._document is not None:
            return self._document
        parsed: dict[str, Any] = await asyncio.to_thread(orjson.loads, self.body)
        self._document = parsed
        return parsed


def slices(view: memoryview) -> list[bytes | memoryview]:
    return [view[start : start + CHUNK] for start in range(0, len(view), CHUNK)]


class CatalogCache:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._entries: dict[tuple[int, CatalogScope], CachedCatalog] = {}
        self._loading: dict[tuple[int, CatalogScope], asyncio.Lock] = {}

    async def get(self, sales_channel_id: int, scope: CatalogScope, version: int) -> CachedCatalog:
        """The catalog of a channel at ``version`` (read just before from the database)."""
        key = (sales_channel_id, scope)
        entry = self._entries.get(key)
        if entry is not None and entry.version == version:
            return entry
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:  # one load per process, however many callers wait
            entry = self._entries.get(key)
            if entry is not None and entry.version == version:
                return entry
            async with read(self.engine) as conn:
                stored, body, summary = await snapshot_body(conn, sales_channel_id, scope)
            entry = await asyncio.to_thread(CachedCatalog.build, stored, body, summary)
            self._entries[key] = entry
            return entry
