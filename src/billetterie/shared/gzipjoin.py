"""gzip a large constant body once, then finish it with a small per-request tail cheaply.

RFC 1951 lets raw deflate streams follow each other when the first ends on a byte boundary
without its final bit (``Z_SYNC_FLUSH``); RFC 1952's trailer needs the CRC-32 and length of the
whole, and CRC-32 can be continued over the tail. So a 20 MB catalog is compressed once per
version, and each request pays only for compressing and checksumming its few tail bytes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, unknown OS


@dataclass(frozen=True)
class GzipHead:
    deflated: bytes
    crc: int
    size: int

    @classmethod
    def of(cls, head: bytes, level: int = 6) -> GzipHead:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated = compressor.compress(head) + compressor.flush(zlib.Z_SYNC_FLUSH)
        return cls(deflated, zlib.crc32(head), len(head))

    def finish(self, tail: bytes) -> bytes:
        """A complete gzip member holding ``head + tail``."""
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated_tail = compressor.compress(tail) + compressor.flush(zlib.Z_FINISH)
        crc = zlib.crc32(tail, self.crc)
        size = (self.size + len(tail)) & 0xFFFFFFFF
        return _HEADER + self.deflated + deflated_tail + struct.pack("<II", crc, size)
