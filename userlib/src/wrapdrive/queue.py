"""A WrapDrive queue, driven by libwd (the C library) through cffi.

``Queue`` holds one ``struct wd_queue``: libwd selected the device, created
the mdev, opened it through VFIO, mapped its regions and armed its eventfd
(wd_request_queue), and runs the ring protocol for every call here.  No
Python code touches the ring: each operation is one C call (cffi releases
the GIL for its duration), so a batch costs one call, not one per item.

Threads: a Queue may be used from several threads at once.  libwd guards
each queue's ring and memory tables with its own mutex and lets one thread
sleep on the eventfd while others wait on a condition variable; the Python
side keeps only the list of buffers it allocated, under a lock.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import os
import threading
import warnings
import weakref
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from . import abi, sysfs
from .abi import ffi, lib
from .errors import (
    BadRequestError,
    NotSharedError,
    QueueDeadError,
    QueueEmptyError,
    QueueFullError,
    QueueReleasedError,
    RequestFailedError,
    RequestTooLargeError,
    VfioError,
    WrapDriveError,
    os_error,
)
from .memory import Buffer
from .request import Request
from .selection import Capa, selection_error

Data = bytes | bytearray | memoryview | Buffer

#: milliseconds meaning "no deadline" for libwd's _timeout calls.
FOREVER = -1
#: output buffers (shared with the device) a queue keeps for its one-shot calls
#: (copy, compress, decompress), and the smallest it makes; sizes are powers of two.
OUTPUT_KEEP = 2
OUTPUT_MIN = 64 << 10

_live_queues: weakref.WeakSet[Queue] = weakref.WeakSet()


def _forget_in_child() -> None:
    # The regions are VM_DONTCOPY: a forked child has no mapping of them.
    for q in list(_live_queues):
        q._abandon()


def _release_all_at_exit() -> None:
    # A queue the program forgot to release goes back to the pool now rather
    # than waiting for the next process's reclaim.
    for q in list(_live_queues):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            q.close()


os.register_at_fork(after_in_child=_forget_in_child)
atexit.register(_release_all_at_exit)


def _errmsg() -> str:
    return str(ffi.string(lib.wd_errmsg()).decode(errors="replace"))


def _ms(timeout: float | None) -> int:
    return FOREVER if timeout is None else max(0, int(timeout * 1000))


def error_for(ret: int, what: str) -> WrapDriveError:
    """The exception for a libwd call's negative errno."""
    err = -ret
    msg = _errmsg() or os.strerror(err)
    if err == errno.EBUSY:
        return QueueFullError()
    if err == errno.EAGAIN:
        return QueueEmptyError()
    if err == errno.ENODEV:
        return QueueDeadError(f"{what}: {msg}")
    if err == errno.E2BIG:
        return RequestTooLargeError(msg)
    if err == errno.EFAULT:
        return NotSharedError(msg)
    if err in (errno.EINVAL, errno.EEXIST, errno.ENOENT):
        return BadRequestError(f"{what}: {msg}")
    if err == errno.ETIMEDOUT:
        return VfioError(err, f"{what}: {msg}")
    return os_error(OSError(err, os.strerror(err)), f"{what}: {msg}")


def _timeout_error(ret: int, what: str) -> Exception:
    if ret == -errno.ETIMEDOUT:
        return TimeoutError(f"{what}: {_errmsg()}")
    return error_for(ret, what)


class Queue:
    """One queue for one capability (``Capa``), opened and mapped by libwd."""

    def __init__(self, capa: Capa, root: Path = sysfs.SYSFS, uuid: str | None = None) -> None:
        self._released = True  # until opened: close() and __del__ have nothing to do
        self.capa = capa
        self.root = root
        self._root_c = ffi.new("char[]", os.fsencode(str(root)))
        self.q = ffi.new("struct wd_queue *")
        self.q.sysfs_root = self._root_c
        self._uuid_c = ffi.NULL if uuid is None else ffi.new("char[]", uuid.encode())
        self.q.uuid = self._uuid_c
        self._alg_c = ffi.new("char[]", capa.algo_type.encode())
        c_capa = ffi.new("struct wd_capa *", {"alg": self._alg_c, "flags": capa.flags})
        ret = lib.wd_request_queue(self.q, c_capa)
        if ret:
            raise selection_error(-ret, capa, root)
        self._released = False
        self._lock = threading.Lock()  # guards _buffers and _outputs
        self._buffers: list[Buffer] = []
        self._outputs: list[Buffer] = []  # free, from _buffers (see _output)
        # Requests libwd holds (sent, not yet received): their struct wd_req is C memory
        # the Request owns, so the Request must live until wd_recv hands it back, even
        # when the caller dropped it (q.send(Request(...))).
        self._in_flight: set[Request] = set()
        self._async_waiters: list[asyncio.Future[None]] = []
        self._async_loop: asyncio.AbstractEventLoop | None = None
        q = self.q
        self.name = ffi.string(q.name).decode()
        self.parent = ffi.string(q.parent).decode()
        self.mdev_type = ffi.string(q.mdev_type).decode()
        self.algo_type = ffi.string(q.alg).decode()
        self.type_flags = int(q.type_flags)
        self.capa_flags = int(q.capa_flags)
        self.entries = int(q.entries)
        self.max_streams = int(q.max_streams)
        self.numa_zone = None if q.numa_zone < 0 else int(q.numa_zone)
        self.priority = int(q.priority)
        #: True when the queue existed before (named by uuid, or provisioned by an
        #: administrator): close() leaves the mdev for the next user.
        self.provisioned = bool(q.provisioned)
        self.efd = int(q.event_fd)
        self.share_all = bool(self.capa_flags & abi.WD_CAPA_SHARE_ALL)
        self.weak_order = bool(self.capa_flags & abi.WD_WEAK_ORDER)
        self.opcodes = (abi.WD_OP_NOP, *abi.ALGO_OPCODES.get(self.algo_type, ()))
        _live_queues.add(self)

    # -- closing -------------------------------------------------------------------
    def close(self) -> None:
        """wd_release_queue: drain what is in flight (bounded), unshare,
        unmap, close, remove the mdev.  Idempotent."""
        if self._released:
            return
        self._released = True
        lib.wd_release_queue(self.q)
        with self._lock:
            for buf in self._buffers:
                buf.close()
            self._buffers.clear()
            self._outputs.clear()
        self._in_flight.clear()
        _live_queues.discard(self)

    def _abandon(self) -> None:
        """In a forked child: the mappings are gone; never touch the queue
        (a zeroed struct wd_queue makes every libwd call refuse, -EBADF/-EINVAL)."""
        self._released = True
        self.q = ffi.new("struct wd_queue *")
        _live_queues.discard(self)

    @property
    def released(self) -> bool:
        """True once close() (wd_release_queue) was called."""
        return self._released

    @property
    def dead(self) -> bool:
        """True when the device went away (WD_Q_DEAD): every call raises QueueDeadError."""
        return bool(lib.wd_is_dead(self.q))

    def _usable(self) -> Any:
        if self._released:
            raise QueueReleasedError("queue was released; request a new one")
        return self.q

    def __enter__(self) -> Queue:
        if self._released:
            raise QueueReleasedError("queue was released; request a new one")
        return self

    def __del__(self) -> None:
        # A queue dropped without close(): say so (as files and sockets do), and
        # give its mdev back now rather than at exit or the next reclaim.
        if getattr(self, "_released", True):
            return
        warnings.warn(f"unclosed {self!r}; call close() or use it in a with block",
                      ResourceWarning, stacklevel=2, source=self)
        with contextlib.suppress(Exception):  # never raise from a finalizer
            self.close()

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<wrapdrive.Queue {self.algo_type} {self.parent}/{self.name} "
                f"entries={self.entries}>")

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet received."""
        return int(lib.wd_in_flight(self._usable()))

    # -- the seed's calls on Request objects -----------------------------------------
    def _check_opcode(self, req: Request) -> None:
        if req.opcode not in self.opcodes:
            raise BadRequestError(f"opcode {req.opcode} is not one this {self.algo_type!r} "
                                  f"queue accepts ({self.opcodes})")

    def send(self, req: Request) -> bool:
        """wd_send: post ``req``; False at once if the ring is full."""
        self._check_opcode(req)
        self._in_flight.add(req)  # before the ring can hand it to a receiver
        ret = lib.wd_send(self._usable(), req.c)
        if ret:
            self._in_flight.discard(req)
            if ret == -errno.EBUSY:
                return False
            raise error_for(ret, "wd_send")
        return True

    def _received(self, ptr: Any) -> Request:
        req = Request.from_c(ptr)
        self._in_flight.discard(req)
        return req

    def recv(self) -> Request | None:
        """wd_recv: a completed request, or None at once if none."""
        out = ffi.new("void **")
        ret = lib.wd_recv(self._usable(), out)
        if ret == -errno.EAGAIN:
            return None
        if ret:
            raise error_for(ret, "wd_recv")
        return self._received(ffi.cast("struct wd_req *", out[0]))

    def send_sync(self, req: Request, timeout: float | None = None) -> None:
        """wd_send_sync: post ``req``, waiting (spin, then sleep) while full."""
        self._check_opcode(req)
        self._in_flight.add(req)
        ret = lib.wd_send_sync_timeout(self._usable(), req.c, _ms(timeout))
        if ret:
            self._in_flight.discard(req)
            raise _timeout_error(ret, "wd_send_sync")

    def recv_sync(self, timeout: float | None = None) -> Request:
        """wd_recv_sync: the next completed request (spin, then sleep on the eventfd)."""
        out = ffi.new("void **")
        ret = lib.wd_recv_sync_timeout(self._usable(), out, _ms(timeout))
        if ret:
            raise _timeout_error(ret, "wd_recv_sync")
        return self._received(ffi.cast("struct wd_req *", out[0]))

    def send_batch(self, reqs: Sequence[Request]) -> int:
        """Post as many of ``reqs`` as fit with one doorbell store; how many."""
        for r in reqs:
            if r.opcode not in self.opcodes:
                self._check_opcode(r)
        if not reqs:
            return 0
        ptrs = ffi.new("struct wd_req *[]", [r.c for r in reqs])
        self._in_flight.update(reqs)
        ret = lib.wd_send_many(self._usable(), ptrs, len(reqs))
        self._in_flight.difference_update(reqs[max(ret, 0):])  # those not posted
        if ret == -errno.EBUSY:
            return 0
        if ret < 0:
            raise error_for(ret, "wd_send_many")
        return int(ret)

    def recv_batch(self, max_n: int = 0) -> list[Request]:
        """Completed requests (at most ``max_n``, or a ring's worth), oldest first."""
        n = max_n or self.entries
        ptrs = ffi.new("struct wd_req *[]", n)
        ret = lib.wd_recv_many(self._usable(), ptrs, n)
        if ret == -errno.EAGAIN:
            return []
        if ret < 0:
            raise error_for(ret, "wd_recv_many")
        return [self._received(ptrs[i]) for i in range(ret)]

    def run(self, req: Request, timeout: float | None = None) -> Request:
        """Send ``req`` and wait for it (other threads' completions stay
        theirs); raises RequestFailedError on a bad status."""
        self._check_opcode(req)
        ret = lib.wd_run(self._usable(), req.c, _ms(timeout))
        if ret:
            raise _timeout_error(ret, "wd_run")
        if req.c.status != abi.WD_STS_OK:
            raise self._failed(req, f"{self.algo_type} request")
        return req

    # -- asyncio -----------------------------------------------------------------------
    def _on_eventfd(self) -> None:
        self._wake_async_waiters()
        if not self._async_waiters and self._async_loop is not None:
            self._async_loop.remove_reader(self.efd)
            self._async_loop = None

    def _wake_async_waiters(self) -> None:
        """Every task asleep in _wait_async looks at the ring again."""
        waiters, self._async_waiters = self._async_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _wait_async(self) -> None:
        """The event loop sleeps until the queue's state changes (libwd's
        wd_arm_wait: drain, arm, re-check).

        The eventfd is one for all the tasks waiting on this queue, and each
        wd_arm_wait drains it: a task that finds the state changed may have
        drained the signal others sleep on, so it wakes them; so does a task
        that reaps a completion (it may be another task's request)."""
        if not lib.wd_arm_wait(self._usable()):
            self._wake_async_waiters()
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._async_waiters.append(fut)
        if self._async_loop is None:
            loop.add_reader(self.efd, self._on_eventfd)
            self._async_loop = loop
        await fut

    async def recv_async(self) -> Request:
        """The next completed request; the event loop sleeps on the eventfd."""
        while True:
            req = self.recv()
            if req is not None:
                self._wake_async_waiters()
                return req
            if self.dead:
                raise QueueDeadError()
            await self._wait_async()

    async def send_async(self, req: Request) -> None:
        """Post ``req``, letting the loop run while the ring is full."""
        while not self.send(req):
            await self._wait_async()

    async def run_async(self, req: Request) -> Request:
        """Send ``req`` and await its completion.  Many tasks may run_async
        on one queue: whichever takes a completion from the ring marks its
        request done, and each task waits for its own (do not mix with
        recv_async on the same queue: it would take their requests)."""
        await self.send_async(req)
        while req.status < 0:
            if self.recv() is not None:
                self._wake_async_waiters()
            elif req.status < 0:
                if self.dead:
                    raise QueueDeadError()
                await self._wait_async()
        if req.status != abi.WD_STS_OK:
            raise self._failed(req, f"{self.algo_type} request")
        return req

    # The one-shot operations below are one C call each that stages plain memory
    # under libwd's lock and releases the GIL: in a worker thread (asyncio.to_thread,
    # the loop's default executor) the loop runs while the call waits for the device.
    # run_async is for Requests on memory shared with the queue; these are for bytes.
    async def crc32c_async(self, data: Data, value: int = 0) -> int:
        """``await q.crc32c_async(data)``: crc32c() in a worker thread, so the
        event loop runs while the device works.  ``data`` must not change
        until the call returns."""
        return await asyncio.to_thread(self.crc32c, data, value)

    async def sha256_async(self, data: Data) -> bytes:
        """``await q.sha256_async(data)``: sha256() in a worker thread, so the
        event loop runs while the device works."""
        return await asyncio.to_thread(self.sha256, data)

    async def compress_async(self, data: Data) -> bytes:
        """``await q.compress_async(data)``: compress() in a worker thread, so
        the event loop runs while the device works."""
        return await asyncio.to_thread(self.compress, data)

    async def decompress_async(self, data: Data, max_size: int = abi.WD_MAX_LEN) -> bytes:
        """``await q.decompress_async(data)``: decompress() in a worker thread,
        so the event loop runs while the device works."""
        return await asyncio.to_thread(self.decompress, data, max_size)

    def _failed(self, req: Request, what: str) -> WrapDriveError:
        """A request that came back with a bad status; one the kernel aborted because
        the queue died is the queue's death (libwd's outcome does the same)."""
        if req.status == abi.WD_STS_ABORTED and self.dead:
            return QueueDeadError(f"{what}: aborted, the queue is dead: its device went away")
        return RequestFailedError(req.status, what)

    # -- memory --------------------------------------------------------------------------
    def share(self, addr: int, size: int, flags: int = 0) -> None:
        """wd_mem_share: let the device use [addr, addr+size)."""
        ret = lib.wd_mem_share(self._usable(), ffi.cast("void *", addr), size, flags)
        if ret:
            raise error_for(ret, "wd_mem_share")

    def unshare(self, addr: int, size: int) -> None:
        """wd_mem_unshare; NotSharedError if the range was not shared whole."""
        ret = lib.wd_mem_unshare_checked(self._usable(), ffi.cast("void *", addr), size)
        if ret == -errno.ENOENT:
            raise NotSharedError(_errmsg())
        if ret:
            raise error_for(ret, "wd_mem_unshare")

    def alloc(self, size: int) -> Buffer:
        """A page-aligned buffer shared with this queue's device (freed with
        the queue).  Requests on it use it in place."""
        self._usable()
        buf = Buffer(size)
        try:
            self.share(buf.addr, buf.size)
        except BaseException:
            buf.close()
            raise
        with self._lock:
            self._buffers.append(buf)
        return buf

    def free(self, buf: Buffer) -> None:
        """Unshare and unmap a buffer from alloc() before the queue closes."""
        self.unshare(buf.addr, buf.size)
        with self._lock:
            self._buffers.remove(buf)
        buf.close()

    def device_address(self, addr: int, length: int = 1) -> int:
        """The address the device uses for process address ``addr``."""
        iova = int(lib.wd_dev_addr(self._usable(), ffi.cast("void *", addr), length))
        if not iova:
            raise NotSharedError(_errmsg())
        return iova

    def is_shared(self, addr: int, length: int) -> bool:
        """True when [addr, addr+length) is shared with this queue's device."""
        return bool(lib.wd_is_shared(self._usable(), ffi.cast("void *", addr), length))

    # -- the Pythonic operations: one C call each ------------------------------------------
    def _need(self, algo: str) -> None:
        if self.algo_type != algo:
            raise BadRequestError(f"this queue does {self.algo_type!r}, not {algo!r}; "
                                  f"request a queue for {algo!r}")

    @staticmethod
    def _check_len(n: int) -> None:
        if n > abi.WD_MAX_LEN:
            raise RequestTooLargeError(
                f"{n} bytes is over the device's per-request limit WD_MAX_LEN "
                f"({abi.WD_MAX_LEN} bytes)")

    @staticmethod
    def _cbuf(data: Data) -> Any:
        """A C pointer to ``data`` without a copy (a Buffer is its memory)."""
        if isinstance(data, Buffer):
            return ffi.from_buffer(data.view)
        return ffi.from_buffer(data)

    def _call_error(self, ret: int, what: str) -> Exception:
        if ret == -errno.EBADF:
            return QueueReleasedError("queue was released; request a new one")
        if ret == -errno.EIO and lib.wd_last_status():
            return RequestFailedError(int(lib.wd_last_status()), what)
        return error_for(ret, what)

    def crc32c(self, data: Data, value: int = 0) -> int:
        """CRC-32C (Castagnoli) of ``data``, continuing from ``value`` (a
        previous result, as zlib.crc32's): one C call, which stages the data
        (or uses a shared Buffer in place), submits, spins and reaps."""
        if self.algo_type != "crc32c":
            self._need("crc32c")
        # bytes go to C as they are (cffi passes their buffer for a char *)
        src = data if type(data) is bytes else self._cbuf(data)
        ret: int = lib.wd_crc32c_call(self.q, src, len(data), value)
        if ret < 0:
            raise self._call_error(ret, "crc32c")
        return ret

    def sha256(self, data: Data) -> bytes:
        """SHA-256 digest of ``data`` (at most WD_MAX_LEN bytes): one C call."""
        if self.algo_type != "sha256":
            self._need("sha256")
        src = data if type(data) is bytes else self._cbuf(data)
        out = ffi.new("char[32]")
        ret = lib.wd_sha256_call(self.q, src, len(data), out)
        if ret:
            raise self._call_error(ret, "sha256")
        return bytes(ffi.buffer(out, 32))

    def _output(self, room: int) -> Buffer:
        """A free output buffer of at least ``room`` bytes, shared with the device.

        The device writes a one-shot call's output there and the call copies it
        once, into the bytes it returns.  A fresh bytearray per call cost more than
        the engine's own inflate of 256 KiB (under TCG: 0.9 ms to zero 512 KiB of
        new pages, then libwd's staging copy into it, then the copy into bytes)."""
        with self._lock:
            for i, buf in enumerate(self._outputs):
                if buf.size >= room:
                    return self._outputs.pop(i)
        return self.alloc(max(OUTPUT_MIN, 1 << (room - 1).bit_length()))

    def _output_done(self, buf: Buffer) -> None:
        with self._lock:
            if self._released:
                return
            if len(self._outputs) < OUTPUT_KEEP:
                self._outputs.append(buf)
                return
        self.free(buf)

    def _xfer(self, opcode: int, data: Data, room: int, what: str) -> tuple[int, bytes]:
        """(ret, the output as bytes, empty unless ret is 0) of one wd_do_xfer."""
        n = len(data)
        self._check_len(n)
        self._check_len(room)
        buf = self._output(room)
        try:
            out_len = ffi.new("size_t[1]", [room])
            st = ffi.new("uint16_t[1]")
            ret = lib.wd_do_xfer(self._usable(), opcode, self._cbuf(data), n,
                                 ffi.cast("void *", buf.addr), out_len, st)
            if ret == -errno.EIO and st[0]:
                ret = int(st[0])
            return ret, (buf.read(int(out_len[0])) if ret == 0 else b"")
        finally:
            self._output_done(buf)

    def memcpy(self, dst: Buffer, src: Buffer, n: int | None = None) -> None:
        """Device copy between two buffers shared with this queue."""
        self._need("memcpy")
        length = min(src.size, dst.size) if n is None else n
        self._check_len(length)
        self.run(Request(abi.WD_OP_MEMCPY, src.addr, length, dst.addr, length))

    def copy(self, data: Data) -> bytes:
        """``data`` copied by the device (a bytes object)."""
        self._need("memcpy")
        ret, out = self._xfer(abi.WD_OP_MEMCPY, data, len(data), "memcpy")
        if ret:
            raise self._status_or_error(ret, "memcpy")
        return out

    def _status_or_error(self, ret: int, what: str) -> Exception:
        return RequestFailedError(ret, what) if ret > 0 else error_for(ret, what)

    def compress(self, data: Data) -> bytes:
        """A zlib stream (RFC 1950) of ``data``; zlib.decompress reads it."""
        self._need("zlib")
        n = len(data)
        room = min(abi.WD_MAX_LEN, abi.deflate_bound(n))
        ret, out = self._xfer(abi.WD_OP_DEFLATE, data, room, "deflate")
        if ret:
            raise self._status_or_error(ret, "deflate")
        return out

    def decompress(self, data: Data, max_size: int = abi.WD_MAX_LEN) -> bytes:
        """Inflate a zlib stream; the output may be up to ``max_size``."""
        self._need("zlib")
        room = min(max_size, max(4 * len(data), 64 << 10))
        while True:
            ret, out = self._xfer(abi.WD_OP_INFLATE, data, room, "inflate")
            if ret == abi.WD_STS_NOSPC and room < max_size:
                room = min(max_size, room * 4)
                continue
            if ret:
                raise self._status_or_error(ret, "inflate")
            return out

    @staticmethod
    def _pieces(chunks: Iterable[Data]) -> tuple[bytes, Any, int]:
        """The chunks end to end (one join in C) and their lengths as a C array.

        No Python step per chunk: a batch's lengths and join run in C.  Only
        when the join refuses a chunk (a Buffer, which is not bytes-like)
        are the chunks looked at one by one."""
        items = chunks if type(chunks) is list else list(chunks)
        lens = array("I", map(len, items))
        Queue._check_len(max(lens, default=0))
        try:
            data = b"".join(items)  # type: ignore[arg-type]  # a Buffer raises TypeError
        except TypeError:
            data = b"".join([c.view if isinstance(c, Buffer) else c for c in items])
        return data, lens, len(items)

    def crc32c_many(self, chunks: Iterable[Data]) -> list[int]:
        """CRC-32C of each chunk: the whole batch in one C call."""
        self._need("crc32c")
        data, lens, n = self._pieces(chunks)
        if not n:
            return []
        out = ffi.new("uint32_t[]", n)
        st = ffi.new("uint16_t[]", n)
        ret = lib.wd_do_crc32c_many(self._usable(), ffi.from_buffer(data),
                                    ffi.from_buffer("uint32_t[]", lens), n, out, st)
        if ret:
            raise self._batch_error(ret, st, n, "crc32c")
        crcs: list[int] = ffi.unpack(out, n)  # already a list of ints
        return crcs

    def sha256_many(self, chunks: Iterable[Data]) -> list[bytes]:
        """SHA-256 of each chunk: the whole batch in one C call."""
        self._need("sha256")
        data, lens, n = self._pieces(chunks)
        if not n:
            return []
        size = abi.WD_SHA256_DIGEST_LEN
        out = bytearray(size * n)
        st = ffi.new("uint16_t[]", n)
        ret = lib.wd_do_sha256_many(self._usable(), ffi.from_buffer(data),
                                    ffi.from_buffer("uint32_t[]", lens), n,
                                    ffi.from_buffer(out), st)
        if ret:
            raise self._batch_error(ret, st, n, "sha256")
        view = bytes(out)
        return [view[i:i + size] for i in range(0, size * n, size)]

    def _batch_error(self, ret: int, st: Any, n: int, what: str) -> Exception:
        if ret == -errno.EIO:
            for i in range(n):
                if st[i]:
                    return RequestFailedError(int(st[i]), f"{what} of piece {i}")
        return error_for(ret, what)

    def map(self, opcode: int, chunks: Iterable[Data], out_len: int = 0) -> list[Completion]:
        """Run ``opcode`` over many chunks in one C call (batched submission,
        completions reaped in bulk).  Returns each piece's outcome, in input
        order; with ``out_len``, each piece's output (up to out_len bytes)."""
        if opcode not in self.opcodes:
            raise BadRequestError(f"opcode {opcode} is not one this {self.algo_type!r} "
                                  f"queue accepts ({self.opcodes})")
        data, lens, n = self._pieces(chunks)
        if not n:
            return []
        dst = bytearray(out_len * n) if out_len else None
        results = ffi.new("uint32_t[]", n)
        outs = ffi.new("uint32_t[]", n)
        st = ffi.new("uint16_t[]", n)
        ret = lib.wd_do_many(self._usable(), opcode, ffi.from_buffer(data),
                             ffi.from_buffer("uint32_t[]", lens), n,
                             ffi.from_buffer(dst) if dst is not None else ffi.NULL, out_len,
                             results, outs, st)
        if ret and ret != -errno.EIO:
            raise error_for(ret, "map")
        out: list[Completion] = []
        for i in range(n):
            o = int(outs[i])
            piece = bytes(dst[i * out_len:i * out_len + o]) if dst is not None else b""
            out.append(Completion(int(st[i]), o, int(results[i]), piece))
        return out

    def info(self) -> dict[str, Any]:
        """The queue's identity and ring parameters, as a dict (for logs and the CLI)."""
        return {"name": self.name, "parent": self.parent, "type": self.mdev_type,
                "algo_type": self.algo_type, "capa_flags": self.capa_flags,
                "entries": self.entries, "numa_zone": self.numa_zone,
                "priority": self.priority, "max_streams": self.max_streams}


class Completion:
    """One piece's outcome from ``Queue.map``."""

    __slots__ = ("data", "out_len", "result", "status")

    def __init__(self, status: int, out_len: int, result: int, data: bytes) -> None:
        self.status = status
        self.out_len = out_len
        self.result = result
        self.data = data

    @property
    def ok(self) -> bool:
        """True when the device completed the piece with WD_STS_OK."""
        return self.status == abi.WD_STS_OK

    def __repr__(self) -> str:
        return (f"Completion(status={self.status}, out_len={self.out_len}, "
                f"result={self.result:#x})")
