"""One libwd stream (``struct wd_stream``): its lifetime, its errors, and
what happens to it across fork.

The objects users see (``wrapdrive.sha256``, the zlib objects) each own a
``StreamHandle``.  A handle keeps its queue alive while the stream lives and
releases the stream (its staging buffers and zlib slot) when it is closed
or collected.  Before a fork every live sha256 stream waits for its pieces
in flight, so that in the child its state is whole: a child that goes on
with an inherited sha256 object moves it to the child's own shared queue
(``wd_stream_move``; the state is plain data).  A zlib stream's state is in
the parent's driver slot: in a child it is dropped, and using it raises.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import weakref
from typing import Any

from .abi import ffi, lib
from .errors import (
    BadRequestError,
    QueueExhaustedError,
    QueueReleasedError,
    RequestFailedError,
    WrapDriveError,
)
from .queue import Queue, error_for

_live: weakref.WeakSet[StreamHandle] = weakref.WeakSet()


class StreamClosedError(WrapDriveError, ValueError):
    """The stream was released, finished, or inherited by a forked child
    that cannot continue it."""


class StreamSlotsExhaustedError(QueueExhaustedError):
    """Every zlib stream slot of the queue (``max_streams``) is in use."""


def _errmsg() -> str:
    return str(ffi.string(lib.wd_errmsg()).decode(errors="replace"))


def stream_error(ret: int, what: str) -> Exception:
    """The exception for a libwd stream call's negative errno."""
    if ret == -errno.EIO and lib.wd_last_status():
        return RequestFailedError(int(lib.wd_last_status()), what)
    if ret == -errno.EBADF:
        return StreamClosedError(f"{what}: the stream is closed")
    if ret == -errno.EBUSY:
        return StreamSlotsExhaustedError(f"{what}: {_errmsg()}")
    if ret in (-errno.EINVAL, -errno.EOPNOTSUPP):
        return BadRequestError(f"{what}: {_errmsg()}")
    return error_for(ret, what)


def _sync_before_fork() -> None:
    for h in list(_live):
        h.sync_for_fork()


os.register_at_fork(before=_sync_before_fork)


class StreamHandle:
    """A ``struct wd_stream`` opened on ``queue`` by ``init`` (a libwd
    init function taking the queue and the stream, plus ``args``).

    Calls go through ``call``, which serialises them (a stream is used by
    one thread at a time) and turns errors into exceptions."""

    def __init__(self, queue: Queue, init: Any, *args: int) -> None:
        self.queue = queue
        self._qc = queue.q  # the C queue the stream points to: kept alive
        self.s = ffi.new("struct wd_stream *")
        self.lock = threading.Lock()
        self.pid = os.getpid()
        ret = init(queue._usable(), self.s, *args)
        if ret:
            raise stream_error(ret, "stream")
        _live.add(self)

    @property
    def is_open(self) -> bool:
        return bool(self.s.priv != ffi.NULL)

    def _adopt_in_child(self) -> None:
        """First use in a forked child: go on with a sha256 stream on this
        process's shared queue; drop a zlib stream."""
        from .shared import shared_queue  # here: shared imports api, which imports us

        self.pid = os.getpid()
        if not self.is_open:
            return
        if self.s.opcode != lib.WD_OP_SHA256:
            lib.wd_stream_move(self.s, ffi.NULL)
            return
        q = shared_queue("sha256")
        ret = lib.wd_stream_move(self.s, q.q)
        if ret:
            lib.wd_stream_move(self.s, ffi.NULL)
            raise stream_error(ret, "sha256 stream inherited across fork")
        self.queue, self._qc = q, q.q

    def stream(self, what: str) -> Any:
        """The C stream, ready for a call (the lock is held by the caller)."""
        if self.pid != os.getpid():
            self._adopt_in_child()
        if not self.is_open:
            raise StreamClosedError(f"{what}: the stream is closed (finished, released, "
                                    f"or a zlib stream inherited across fork)")
        if self.queue.released:
            raise QueueReleasedError(f"{what}: the stream's queue was released")
        return self.s

    def check(self, ret: int, what: str) -> None:
        if ret:
            raise stream_error(ret, what)

    def sync_for_fork(self) -> None:
        """Wait for the pieces in flight (before fork; errors stay in the stream)."""
        with self.lock:
            if self.pid == os.getpid() and self.is_open and not self.queue.released:
                lib.wd_stream_sync(self.s)

    def close(self) -> None:
        """Release the stream's buffers and slot.  Idempotent."""
        with self.lock:
            if not self.is_open:
                return
            if self.pid != os.getpid():
                lib.wd_stream_move(self.s, ffi.NULL)  # nothing of the parent's queue
            else:
                lib.wd_stream_release(self.s)
        _live.discard(self)

    def __del__(self) -> None:
        if getattr(self, "s", None) is not None and self.is_open:
            with contextlib.suppress(Exception):  # collection must not raise
                self.close()
