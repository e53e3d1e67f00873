"""zlib streams on the device, shaped like ``zlib.compressobj()`` and
``zlib.decompressobj()``.

    c = wrapdrive.compressobj(level=6)
    z = c.compress(part) + c.compress(more) + c.flush()
    d = wrapdrive.decompressobj()
    data = d.decompress(z); d.eof; d.unused_data

The stream's state lives in the driver, in one of the queue's stream slots
(``Queue.max_streams``), held until the stream ends or the object is
closed or collected.  ``compress`` gathers input into device-sized pieces
(its output may come later, as zlib's does); ``flush(zlib.Z_SYNC_FLUSH)``
or ``Z_FULL_FLUSH`` makes everything so far decodable, ``flush()``
(Z_FINISH) ends the stream.  ``decompress`` returns all the output of what
it was given.  Output is the zlib format (RFC 1950), byte-compatible with
zlib.decompress; the raw and gzip formats (other ``wbits``) are not offered.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from .abi import ffi, lib
from .chunks import as_bytes_view
from .errors import BadRequestError
from .queue import Queue
from .shared import stream_queues
from .stream_handle import StreamHandle, StreamSlotsExhaustedError

#: zlib flush modes and the device's.
_FLUSH_MODES: dict[int, int] = {
    zlib.Z_NO_FLUSH: lib.WD_FLUSH_NONE,
    zlib.Z_SYNC_FLUSH: lib.WD_FLUSH_SYNC,
    zlib.Z_FULL_FLUSH: lib.WD_FLUSH_FULL,
    zlib.Z_FINISH: lib.WD_STREAM_FINISH,
}


def _device_level(level: int) -> int:
    """zlib's level (-1 default, 0 stored, 1..9) as the descriptor's."""
    if level == zlib.Z_DEFAULT_COMPRESSION:
        return int(lib.WD_LEVEL_DEFAULT)
    if level == 0:
        return int(lib.WD_LEVEL_STORE)
    if 1 <= level <= 9:
        return level
    raise ValueError(f"Bad compression level {level}: want -1, or 0..9")


def _check_format(wbits: int) -> None:
    if wbits != zlib.MAX_WBITS:
        raise ValueError(f"wbits={wbits}: the device makes the zlib format only "
                         f"(wbits={zlib.MAX_WBITS})")


def _open(queue: Queue | None, init: Callable[..., int], *args: int) -> StreamHandle:
    """A zlib stream on ``queue``, or on a shared queue with a free slot."""
    if queue is not None:
        return StreamHandle(queue, init, *args)
    for q in stream_queues("zlib"):
        try:
            return StreamHandle(q, init, *args)
        except StreamSlotsExhaustedError:
            continue
    raise StreamSlotsExhaustedError("every stream slot of this process's shared zlib "
                                    "queues is in use")


def _take_output(h: StreamHandle, s: Any) -> bytes:
    n = int(lib.wd_stream_pending(s))
    if not n:
        return b""
    out = bytearray(n)
    lib.wd_stream_read(s, ffi.from_buffer(out), n)
    return bytes(out)


class Compress:
    """A deflate stream (see ``compressobj``)."""

    def __init__(self, level: int, queue: Queue | None) -> None:
        self._h = _open(queue, lib.wd_deflate_init, _device_level(level))

    def compress(self, data: Any) -> bytes:
        """Compress ``data``; returns what output is ready (maybe b"")."""
        view = as_bytes_view(data)
        h = self._h
        with h.lock:
            s = h.stream("compress")
            h.check(lib.wd_stream_write(s, ffi.from_buffer(view), len(view),
                                        lib.WD_FLUSH_NONE), "compress")
            return _take_output(h, s)

    def flush(self, mode: int = zlib.Z_FINISH) -> bytes:
        """The output held back: Z_SYNC_FLUSH and Z_FULL_FLUSH make all input
        so far decodable, Z_FINISH (the default) ends the stream."""
        if mode not in _FLUSH_MODES:
            raise ValueError(f"unknown flush mode {mode}")
        if mode == zlib.Z_NO_FLUSH:
            return b""
        h = self._h
        with h.lock:
            s = h.stream("flush")
            h.check(lib.wd_stream_write(s, ffi.NULL, 0, _FLUSH_MODES[mode]), "flush")
            out = _take_output(h, s)
        if mode == zlib.Z_FINISH:
            h.close()  # the slot is free; later calls raise StreamClosedError
        return out

    def close(self) -> None:
        """Drop the stream and free its slot now."""
        self._h.close()


class Decompress:
    """An inflate stream (see ``decompressobj``)."""

    def __init__(self, queue: Queue | None) -> None:
        self._h = _open(queue, lib.wd_inflate_init)
        self.unused_data = b""
        #: always empty: every byte given is used (see decompress)
        self.unconsumed_tail = b""
        self.eof = False

    def decompress(self, data: Any, max_length: int = 0) -> bytes:
        """All the output of ``data``; bytes after the end of the zlib
        stream go to ``unused_data``.  ``max_length`` is not supported
        (the device inflates everything it is given): pass 0."""
        if max_length:
            raise BadRequestError("max_length is not supported: the device inflates "
                                  "everything it is given")
        view = as_bytes_view(data)
        if self.eof:
            self.unused_data += bytes(view)
            return b""
        h = self._h
        with h.lock:
            s = h.stream("decompress")
            before = int(s.total_in)
            h.check(lib.wd_stream_write(s, ffi.from_buffer(view), len(view),
                                        lib.WD_FLUSH_NONE), "decompress")
            out = _take_output(h, s)
            if s.eof:
                used = int(s.total_in) - before
                self.unused_data = bytes(view[used:])
                self.eof = True
        if self.eof:
            h.close()
        return out

    def flush(self, length: int = zlib.DEF_BUF_SIZE) -> bytes:
        """Output still held (none: decompress returns it all).  Like
        zlib's, it does not complain about a stream that has not ended."""
        if length <= 0:
            raise ValueError("length must be greater than zero")
        return b""

    def close(self) -> None:
        """Drop the stream and free its slot now."""
        self._h.close()


def compressobj(level: int = zlib.Z_DEFAULT_COMPRESSION, method: int = zlib.DEFLATED,
                wbits: int = zlib.MAX_WBITS, memLevel: int = zlib.DEF_MEM_LEVEL,
                strategy: int = zlib.Z_DEFAULT_STRATEGY, *,
                queue: Queue | None = None) -> Compress:
    """A deflate stream on the device, as ``zlib.compressobj``; only the
    zlib format (``wbits`` 15) and zlib's defaults for ``method``,
    ``memLevel`` and ``strategy``."""
    _check_format(wbits)
    if method != zlib.DEFLATED or memLevel != zlib.DEF_MEM_LEVEL or \
            strategy != zlib.Z_DEFAULT_STRATEGY:
        raise ValueError("the device uses zlib's default method, memLevel and strategy")
    return Compress(level, queue)


def decompressobj(wbits: int = zlib.MAX_WBITS, *, queue: Queue | None = None) -> Decompress:
    """An inflate stream on the device, as ``zlib.decompressobj``."""
    _check_format(wbits)
    return Decompress(queue)
