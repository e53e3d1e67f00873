"""The ring protocol of kernel/uapi/wrapdrive.h, on already-mapped memory.

``Ring`` does the fast path with plain memory operations and no syscall:
descriptors go to the SQ with precompiled multi-descriptor ``struct.Struct``
objects (one per batch size, cached), one doorbell store publishes a whole
batch, and completions are reaped in bulk.  The only syscall it may make is
the slow-path kick (``kick``), when the engine has set WD_Q_ENGINE_IDLE.

It knows nothing about VFIO: ``queue.Queue`` hands it the mapped regions.
"""

from __future__ import annotations

import ctypes
import struct
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from . import uapi
from .errors import QueueDeadError, QueueReleasedError, RequestTooLargeError

U32 = 0xFFFFFFFF

def _make_barrier() -> Callable[[], None]:
    """Build ``full_barrier``: lock + unlock of a glibc spinlock via ctypes.

    Why not a threading.Lock, the obvious locked instruction in Python?  In
    CPython 3.11 every Lock.acquire() computes a sem_clockwait deadline with
    clock_gettime(CLOCK_MONOTONIC), even a non-blocking one.  Where the
    clocksource has no vDSO (a TCG guest runs on hpet) that is a real
    syscall per doorbell: strace saw it.  glibc's pthread_spin_lock is
    `lock decl` on x86, with no clock and no syscall; the threading.Lock
    remains the fallback for a libc without it.
    """
    try:
        libc = ctypes.CDLL(None)
        lock_fn = libc.pthread_spin_lock
        unlock_fn = libc.pthread_spin_unlock
        init_fn = libc.pthread_spin_init
    except (OSError, AttributeError):
        lk = threading.Lock()

        def lock_barrier() -> None:
            lk.acquire()
            lk.release()

        return lock_barrier
    for fn in (lock_fn, unlock_fn, init_fn):
        fn.restype = ctypes.c_int
    lock_fn.argtypes = unlock_fn.argtypes = [ctypes.c_void_p]
    init_fn.argtypes = [ctypes.c_void_p, ctypes.c_int]
    spin = ctypes.c_int(1)  # pthread_spinlock_t is an int on Linux
    addr = ctypes.addressof(spin)
    if init_fn(addr, 0) != 0:
        raise OSError("pthread_spin_init failed")

    def spin_barrier() -> None:
        lock_fn(addr)
        unlock_fn(addr)

    spin_barrier.__dict__["_keepalive"] = spin  # the lock word must outlive the closure
    return spin_barrier


_barrier = _make_barrier()


def full_barrier() -> None:
    """Full memory barrier (store -> load ordering) from Python on x86.

    x86 keeps stores in order with stores and loads with loads, but a load
    may pass an earlier store still sitting in the store buffer: the
    doorbell store could become visible after our read of ring.status and
    we would miss WD_Q_ENGINE_IDLE (or the irq_request store could pass the
    cq_tail re-check and we would sleep with a completion already posted).
    A LOCK-prefixed instruction drains the store buffer: a full fence.  We
    get one by locking and unlocking a lock (see ``_make_barrier`` for why a
    spinlock rather than threading.Lock); it is held for nanoseconds, so it
    is practically never contended, and no syscall is made.
    """
    _barrier()


class Request:
    """One request: what to do (opcode, buffers) and, once done, the outcome.

    ``src``/``dst`` are process addresses (of memory shared with the queue);
    the queue translates them to device addresses.  ``tag`` is set when the
    request is submitted; ``status``/``out_len``/``result`` when it completes.
    ``context`` is free for the caller.
    """

    __slots__ = (
        "context",
        "dst",
        "dst_len",
        "opcode",
        "out_len",
        "result",
        "src",
        "src_len",
        "status",
        "tag",
    )

    def __init__(self, opcode: int, src: int = 0, src_len: int = 0, dst: int = 0,
                 dst_len: int = 0, context: Any = None) -> None:
        self.opcode = opcode
        self.src = src
        self.src_len = src_len
        self.dst = dst
        self.dst_len = dst_len
        self.context = context
        self.tag = -1
        self.status = -1
        self.out_len = 0
        self.result = 0

    @property
    def done(self) -> bool:
        return self.status >= 0

    @property
    def ok(self) -> bool:
        return self.status == uapi.WD_STS_OK

    def __repr__(self) -> str:
        return (f"Request(opcode={self.opcode}, src={self.src:#x}, src_len={self.src_len}, "
                f"dst={self.dst:#x}, dst_len={self.dst_len}, tag={self.tag}, "
                f"status={self.status}, out_len={self.out_len}, result={self.result:#x})")


_DESC_STRUCTS: dict[int, struct.Struct] = {}
_CQE_STRUCTS: dict[int, struct.Struct] = {}


def desc_struct(n: int) -> struct.Struct:
    """Struct packing ``n`` consecutive wd_desc in one call (cached)."""
    s = _DESC_STRUCTS.get(n)
    if s is None:
        s = _DESC_STRUCTS[n] = struct.Struct("<" + uapi.DESC_FORMAT * n)
    return s


def cqe_struct(n: int) -> struct.Struct:
    """Struct unpacking ``n`` consecutive wd_cqe in one call (cached)."""
    s = _CQE_STRUCTS.get(n)
    if s is None:
        s = _CQE_STRUCTS[n] = struct.Struct("<" + uapi.CQE_FORMAT * n)
    return s


Translate = Callable[[int, int], int]


def _identity(addr: int, length: int) -> int:
    return addr


class Ring:
    """Producer/consumer side of one queue's SQ and CQ (not thread safe)."""

    def __init__(self, doorbell: memoryview, header: memoryview, sq: memoryview,
                 cq: memoryview, entries: int, kick: Callable[[int], None],
                 translate: Translate = _identity) -> None:
        if entries <= 0 or entries & (entries - 1):
            raise ValueError(f"ring entries {entries} is not a power of two")
        self.db = doorbell  # u32 view of struct wd_doorbell
        self.hdr = header  # u32 view of struct wd_ring_hdr
        self.sq = sq  # bytes of the SQ
        self.cq = cq  # bytes of the CQ
        self.entries = entries
        self.mask = entries - 1
        self.kick = kick
        self.translate = translate
        self.cq_head = self.sq_tail = header[uapi.HDR_CQ_TAIL_WORD]
        self.inflight: dict[int, Request] = {}
        self.done: deque[Request] = deque()
        self.dead = False
        self.released = False
        self.kicks = 0

    # -- state -------------------------------------------------------------
    def check_usable(self) -> None:
        if self.released:
            raise QueueReleasedError("queue was released; request a new one")
        if self.dead:
            raise QueueDeadError()

    def check_dead(self) -> bool:
        if self.hdr[uapi.HDR_STATUS_WORD] & uapi.WD_Q_DEAD:
            self.dead = True
        return self.dead

    @property
    def in_flight(self) -> int:
        """Submitted but not yet taken from the CQ."""
        return (self.sq_tail - self.cq_head) & U32

    @property
    def space(self) -> int:
        return self.entries - ((self.sq_tail - self.cq_head) & U32)

    def completion_pending(self) -> bool:
        return self.hdr[uapi.HDR_CQ_TAIL_WORD] != self.cq_head

    # -- submitting ------------------------------------------------------------
    def _desc_args(self, req: Request, tag: int, out: list[int]) -> None:
        src_len = req.src_len
        dst_len = req.dst_len
        if src_len > uapi.WD_MAX_LEN or dst_len > uapi.WD_MAX_LEN:
            raise RequestTooLargeError(
                f"request of {max(src_len, dst_len)} bytes is over WD_MAX_LEN "
                f"({uapi.WD_MAX_LEN} bytes)")
        if src_len < 0 or dst_len < 0:
            raise RequestTooLargeError("negative request length")
        tr = self.translate
        src = tr(req.src, src_len) if req.src or src_len else 0
        dst = tr(req.dst, dst_len) if req.dst or dst_len else 0
        out += (tag, req.opcode, 0, src, dst, src_len, dst_len, 0, 0, 0, 0, 0, 0, 0)

    def _publish(self, tail: int) -> None:
        """One doorbell store for everything up to ``tail``, then the
        barrier and the WD_Q_ENGINE_IDLE check of the slow-path kick."""
        self.sq_tail = tail
        self.db[uapi.DB_SQ_TAIL_WORD] = tail
        full_barrier()
        status = self.hdr[uapi.HDR_STATUS_WORD]
        if status & (uapi.WD_Q_ENGINE_IDLE | uapi.WD_Q_DEAD):
            if status & uapi.WD_Q_DEAD:
                self.dead = True
                raise QueueDeadError()
            self.kicks += 1
            self.kick(tail)

    def try_send(self, req: Request) -> bool:
        """Post one request; False at once when the ring is full."""
        if self.released or self.dead:
            self.check_usable()
        tail = self.sq_tail
        if (tail - self.cq_head) & U32 >= self.entries and (
                not self.reap() or (tail - self.cq_head) & U32 >= self.entries):
            return False
        args: list[int] = []
        self._desc_args(req, tail, args)
        uapi.DESC_STRUCT.pack_into(self.sq, (tail & self.mask) << uapi.DESC_SHIFT, *args)
        req.tag = tail
        req.status = -1
        self.inflight[tail] = req
        self._publish((tail + 1) & U32)
        return True

    def send_batch(self, reqs: Sequence[Request]) -> int:
        """Post as many of ``reqs`` as fit, in order, with one doorbell store.

        Returns how many were posted (0 when the ring is full)."""
        if self.released or self.dead:
            self.check_usable()
        tail = self.sq_tail
        space = self.entries - ((tail - self.cq_head) & U32)
        if space < len(reqs):
            self.reap()
            space = self.entries - ((tail - self.cq_head) & U32)
        n = min(space, len(reqs))
        if n <= 0:
            return 0
        args: list[int] = []
        inflight = self.inflight
        for i in range(n):
            req = reqs[i]
            tag = (tail + i) & U32
            self._desc_args(req, tag, args)
            req.tag = tag
            req.status = -1
            inflight[tag] = req
        self._pack(tail, n, args)
        self._publish((tail + n) & U32)
        return n

    def _pack(self, tail: int, n: int, args: list[int]) -> None:
        slot = tail & self.mask
        first = min(n, self.entries - slot)
        if first == n:
            desc_struct(n).pack_into(self.sq, slot << uapi.DESC_SHIFT, *args)
        else:
            k = first * uapi.DESC_VALUES
            desc_struct(first).pack_into(self.sq, slot << uapi.DESC_SHIFT, *args[:k])
            desc_struct(n - first).pack_into(self.sq, 0, *args[k:])

    def send_raw(self, opcode: int, srcs: Sequence[int], src_lens: Sequence[int],
                 dsts: Sequence[int] | None = None,
                 dst_lens: Sequence[int] | None = None) -> int:
        """Batch fast path for callers that keep their own bookkeeping.

        Addresses are DEVICE addresses (already translated, e.g.
        ``queue.device_address(buf.addr)``); nothing is translated or
        validated per descriptor except by the device, which answers a bad
        one with a status.  Returns the first tag; tags are consecutive.
        Completions come back from ``recv_raw``."""
        if self.released or self.dead:
            self.check_usable()
        n = len(srcs)
        tail = self.sq_tail
        if self.entries - ((tail - self.cq_head) & U32) < n:
            raise BlockingIOError(16, f"no room for {n} descriptors")
        zeros = (0,) * n
        tags = [(tail + i) & U32 for i in range(n)]
        cols = (tags, (opcode,) * n, zeros, srcs, dsts or zeros, src_lens, dst_lens or zeros,
                *(zeros,) * (uapi.DESC_VALUES - 7))
        args = [v for row in zip(*cols, strict=False) for v in row]
        self._pack(tail, n, args)
        self._publish((tail + n) & U32)
        return tail

    def recv_raw(self) -> tuple[int, ...]:
        """Take every posted completion as one flat tuple
        (tag, status, flags, out_len, result)*k; only for ``send_raw`` users."""
        tail = self.hdr[uapi.HDR_CQ_TAIL_WORD]
        head = self.cq_head
        n = (tail - head) & U32
        if not n:
            return ()
        if n > self.entries:
            self._corrupt(tail)
        slot = head & self.mask
        first = min(n, self.entries - slot)
        vals = cqe_struct(first).unpack_from(self.cq, slot << uapi.CQE_SHIFT)
        if first < n:
            vals += cqe_struct(n - first).unpack_from(self.cq, 0)
        self.cq_head = tail
        self.db[uapi.DB_CQ_HEAD_WORD] = tail
        return vals

    # -- completing ------------------------------------------------------------
    def _corrupt(self, tail: int) -> None:
        self.dead = True
        raise QueueDeadError(f"device posted cq_tail {tail} beyond the ring "
                             f"(cq_head {self.cq_head}, {self.entries} entries)")

    def reap(self) -> int:
        """Move every posted completion to ``done`` (bulk); returns how many."""
        tail = self.hdr[uapi.HDR_CQ_TAIL_WORD]
        head = self.cq_head
        n = (tail - head) & U32
        if not n:
            return 0
        if n > self.entries:
            self._corrupt(tail)
        inflight = self.inflight
        done = self.done
        left = n
        while left:
            slot = head & self.mask
            k = min(left, self.entries - slot)
            vals = cqe_struct(k).unpack_from(self.cq, slot << uapi.CQE_SHIFT)
            for i in range(0, k * uapi.CQE_VALUES, uapi.CQE_VALUES):
                req = inflight.pop(vals[i], None)
                if req is None:
                    continue  # a tag we never sent: ignore rather than crash
                req.status = vals[i + uapi.CQE_STATUS]
                req.out_len = vals[i + uapi.CQE_OUT_LEN]
                req.result = vals[i + uapi.CQE_RESULT]
                done.append(req)
            head = (head + k) & U32
            left -= k
        self.cq_head = head
        self.db[uapi.DB_CQ_HEAD_WORD] = head
        return n

    def try_recv(self) -> Request | None:
        if self.done:
            return self.done.popleft()
        if self.released:
            self.check_usable()
        if self.reap():
            return self.done.popleft()
        return None

    def recv_batch(self, max_n: int = 0) -> list[Request]:
        """Every completed request (at most ``max_n`` if given), oldest first."""
        if self.released:
            self.check_usable()
        self.reap()
        done = self.done
        if not max_n or max_n >= len(done):
            out = list(done)
            done.clear()
            return out
        return [done.popleft() for _ in range(max_n)]

    def arm_irq(self) -> bool:
        """Ask for one eventfd signal; False if a completion (or death)
        already arrived, so the caller must not sleep."""
        self.db[uapi.DB_IRQ_REQUEST_WORD] = 1
        full_barrier()
        if self.hdr[uapi.HDR_CQ_TAIL_WORD] != self.cq_head:
            return False
        return not self.check_dead()
