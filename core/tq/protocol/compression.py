"""zlib / bz2 / gzip bodies selected by the ``compression`` header, with a bomb guard."""

from __future__ import annotations

import bz2
import gzip
import zlib

from tq.exceptions import DecodeError, MessageTooLarge, ProtocolError

ZLIB = "application/x-gzip"  # kombu's name for zlib
BZ2 = "application/x-bz2"
GZIP = "application/gzip"

ALIASES = {"zlib": ZLIB, "gzip": GZIP, "bzip2": BZ2, "bz2": BZ2, ZLIB: ZLIB, BZ2: BZ2, GZIP: GZIP}


def compress(data: bytes, method: str) -> tuple[str, bytes]:
    """Compress with ``method`` (zlib, gzip, bzip2); returns ``(header value, bytes)``."""
    name = ALIASES.get(method)
    if name == ZLIB:
        return name, zlib.compress(data)
    if name == GZIP:
        return name, gzip.compress(data)
    if name == BZ2:
        return name, bz2.compress(data)
    raise ProtocolError(f"unknown compression {method!r}; choose zlib, gzip or bzip2")


def decompress(data: bytes, header: str, max_size: int) -> bytes:
    """Decompress ``data`` but never produce more than ``max_size`` bytes.

    Raises:
        MessageTooLarge: the output would pass ``max_size`` (a compression bomb).
        DecodeError: the data is not valid for the method, or the method is unknown.
    """
    name = ALIASES.get(header)
    try:
        if name in (ZLIB, GZIP):
            wbits = zlib.MAX_WBITS | (16 if name == GZIP else 0)
            dec = zlib.decompressobj(wbits)
            out = dec.decompress(data, max_size + 1)
        elif name == BZ2:
            bdec = bz2.BZ2Decompressor()
            out = bdec.decompress(data, max_length=max_size + 1)
        else:
            raise DecodeError(f"unknown compression {header!r}")
    except (zlib.error, OSError, EOFError, ValueError) as exc:
        raise DecodeError(f"cannot decompress ({header}): {exc}") from exc
    if len(out) > max_size:
        raise MessageTooLarge(f"decompressed body is larger than the {max_size} byte limit")
    return out
