"""gzip large constant parts once, then finish them with a small per-request tail cheaply.

RFC 1951 lets raw deflate streams follow each other when each but the last ends on a byte
boundary without its final bit (``Z_SYNC_FLUSH``); RFC 1952's trailer needs the CRC-32 and length
of the whole, and CRC-32 can be continued over what follows. So a 20 MB catalog is compressed
once per version and process, and each request pays only for compressing and checksumming its
few tail bytes. The same compressed body serves two documents (the RPC envelope around it and
the bare GET mirror) because each part is compressed on its own.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, unknown OS


def deflate_part(data: bytes | memoryview, level: int = 6) -> bytes:
    """A raw deflate stream of ``data`` ending on a byte boundary, not final."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


@dataclass(frozen=True)
class GzipHead:
    """The compressed parts of a document's constant beginning."""

    deflated: tuple[bytes, ...]
    crc: int
    size: int

    @classmethod
    def of(cls, head: bytes, level: int = 6) -> GzipHead:
        return cls((deflate_part(head, level),), zlib.crc32(head), len(head))

    @classmethod
    def of_part(cls, deflated: bytes, part: bytes | memoryview) -> GzipHead:
        """A head made of one part already compressed with :func:`deflate_part`."""
        return cls((deflated,), zlib.crc32(part), len(part))

    def then(self, deflated: bytes, part: bytes | memoryview) -> GzipHead:
        """This head followed by ``part``, already compressed with :func:`deflate_part`."""
        return GzipHead(
            (*self.deflated, deflated), zlib.crc32(part, self.crc), self.size + len(part)
        )

    def finish(self, tail: bytes) -> bytes:
        """A complete gzip member holding the head's parts followed by ``tail``."""
        return b"".join(self.chunks(tail))

    def chunks(self, tail: bytes) -> list[bytes]:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated_tail = compressor.compress(tail) + compressor.flush(zlib.Z_FINISH)
        crc = zlib.crc32(tail, self.crc)
        size = (self.size + len(tail)) & 0xFFFFFFFF
        return [_HEADER, *self.deflated, deflated_tail, struct.pack("<II", crc, size)]
