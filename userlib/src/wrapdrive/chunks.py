"""Splitting data into pieces, in pure Python (no device): the part of
streaming that the host tests check with property tests.

``as_bytes_view`` turns any buffer object into a flat byte view, as hashlib
and zlib accept them; ``pieces`` cuts a view into pieces of at most ``size``
bytes without copying; ``read_pieces`` reads a file in pieces through one
reused buffer, so a file of any size costs constant memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class Readable(Protocol):
    """A binary file: what ``read_pieces`` and ``sha256.update_from`` read."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...

#: bytes read at a time from a file: a few stream pieces, so the device
#: always has the next piece waiting.
READ_SIZE = 8 << 20


def as_bytes_view(data: object) -> memoryview:
    """A flat, byte-format view of ``data`` (bytes, bytearray, memoryview,
    array, mmap ...).  Raises TypeError, as hashlib does, for str and for
    objects without the buffer protocol; ValueError for non-contiguous
    buffers."""
    if isinstance(data, str):
        raise TypeError("Strings must be encoded before hashing")
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"object supporting the buffer API required, not "
                        f"{type(data).__name__}") from None
    if not view.contiguous:
        raise ValueError("a contiguous buffer is required")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def pieces(view: memoryview, size: int) -> Iterator[memoryview]:
    """``view`` in consecutive pieces of ``size`` bytes (the last may be
    shorter); nothing for an empty view.  No copy."""
    if size <= 0:
        raise ValueError("piece size must be positive")
    for off in range(0, len(view), size):
        yield view[off:off + size]


def read_pieces(f: Readable, size: int = READ_SIZE) -> Iterator[memoryview]:
    """What ``f`` holds, in pieces of up to ``size`` bytes read into one
    buffer that is reused: each piece is valid until the next is read."""
    buf = bytearray(size)
    view = memoryview(buf)
    while True:
        n = f.readinto(view)
        if not n:
            return
        yield view[:n]
