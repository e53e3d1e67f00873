"""A WrapDrive queue: an mdev opened through VFIO, its ring and its memory.

``Queue`` owns everything a queue needs (mdev, container, group, device fd,
the two mapped regions, the irq eventfd, shared memory) and releases it in
``close()``.  The fast path is ``ring.Ring``; this module adds the sleeping
forms (spin briefly, then irq_request + eventfd), asyncio, and the Pythonic
helpers (sha256, crc32c, copy, compress, decompress, batches).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import select
import time
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from . import sysfs, uapi
from .errors import (
    BadRequestError,
    QueueDeadError,
    QueueReleasedError,
    RequestFailedError,
    RequestTooLargeError,
    VfioError,
)
from .memory import PAGE_SIZE, Buffer, SharedMemory, page_round_up
from .ring import Request, Ring
from .selection import Capa, create_queue_mdev
from .vfio import Container, Device, Group

#: how long the sync forms poll the ring before sleeping on the eventfd.
SPIN_SECONDS = 50e-6

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
            q.close(drain_timeout=0.2)


os.register_at_fork(after_in_child=_forget_in_child)
atexit.register(_release_all_at_exit)


class Queue:
    """One queue for one capability (``Capa``), opened and mapped."""

    def __init__(self, capa: Capa, root: Path = sysfs.SYSFS) -> None:
        self.capa = capa
        self.root = root
        cand, name = create_queue_mdev(capa, root)
        self.name = name
        self.parent = cand.device.name
        self.mdev_type = cand.mtype.name
        self.numa_zone = cand.device.numa_zone
        self.priority = cand.device.priority
        self.algo_type = cand.mtype.algo_type
        self.type_flags = cand.mtype.flags
        self._buffers: list[Buffer] = []
        self._staging: dict[str, Buffer] = {}
        self._views: list[memoryview] = []
        self._async_waiters: list[asyncio.Future[None]] = []
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self.container: Container | None = None
        self.group: Group | None = None
        self.device: Device | None = None
        self.efd = -1
        try:
            self._open()
        except BaseException:
            self._teardown(remove=True)
            raise
        _live_queues.add(self)

    # -- opening -----------------------------------------------------------------
    def _open(self) -> None:
        group_no = sysfs.mdev_iommu_group(self.name, self.root)
        self.container = Container()
        self.group = Group(group_no, self.container)
        self.container.set_iommu()
        self.device = Device(self.group.get_device_fd(self.name), self.name)
        dev = self.device
        info = dev.info()
        if info.num_regions < uapi.WD_NUM_REGIONS or info.num_irqs < uapi.WD_NUM_IRQS:
            raise VfioError(0, f"{self.name}: {info.num_regions} regions / {info.num_irqs} "
                            "irqs, not a WrapDrive queue")
        dbr = dev.region_info(uapi.WD_REGION_DOORBELL)
        cqr = dev.region_info(uapi.WD_REGION_CQ)
        sqr = dev.region_info(uapi.WD_REGION_SQ)
        self._db_offset = dbr.offset
        self._db_mm = dev.mmap_region(dbr, min(dbr.size, PAGE_SIZE) or PAGE_SIZE)
        self._cq_mm = dev.mmap_region(cqr, writable=False)
        self._sq_mm = dev.mmap_region(sqr)
        hdr = uapi.WdRingHdr.from_buffer_copy(self._cq_mm, 0)
        if hdr.magic != uapi.WD_RING_MAGIC or hdr.version != uapi.WD_ABI_VERSION:
            raise VfioError(0, f"{self.name}: ring magic {hdr.magic:#x} version "
                            f"{hdr.version}, expected {uapi.WD_RING_MAGIC:#x} "
                            f"v{uapi.WD_ABI_VERSION}")
        desc_size, cqe_size = uapi.DESC_STRUCT.size, uapi.CQE_STRUCT.size
        if hdr.desc_size != desc_size or hdr.cqe_size != cqe_size:
            raise VfioError(0, f"{self.name}: descriptor/completion sizes "
                            f"{hdr.desc_size}/{hdr.cqe_size}, expected {desc_size}/{cqe_size}")
        entries = int(hdr.entries)
        if entries * desc_size > sqr.size or hdr.cq_off + entries * cqe_size > cqr.size:
            raise VfioError(0, f"{self.name}: SQ/CQ outside their regions")
        self.entries = entries
        self.capa_flags = int(hdr.capa_flags)
        self.share_all = bool(self.capa_flags & uapi.WD_CAPA_SHARE_ALL)
        self.weak_order = bool(self.capa_flags & uapi.WD_WEAK_ORDER)
        db_base = memoryview(self._db_mm)
        cq_base = memoryview(self._cq_mm)
        sq_base = memoryview(self._sq_mm)
        db32 = db_base[:ctypes.sizeof(uapi.WdDoorbell)].cast("I")
        hdr32 = cq_base[:ctypes.sizeof(uapi.WdRingHdr)].cast("I")
        sq = sq_base[:entries * desc_size]
        cq = cq_base[hdr.cq_off:hdr.cq_off + entries * cqe_size]
        self._views = [db32, hdr32, sq, cq, db_base, cq_base, sq_base]
        container = self.container
        self.memory = SharedMemory(container.map_dma, container.unmap_dma,
                                   share_all=self.share_all)
        self.ring = Ring(db32, hdr32, sq, cq, entries, self._kick, self.memory.translate)
        self.efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        dev.set_irq_eventfd(uapi.WD_IRQ_QUEUE_STATE, self.efd)
        self.opcodes = (uapi.WD_OP_NOP, *uapi.ALGO_OPCODES.get(self.algo_type, ()))

    def _kick(self, tail: int) -> None:
        """Slow path: the engine went idle; a pwrite of the tail wakes it."""
        assert self.device is not None
        try:
            os.pwrite(self.device.fd, (tail & 0xFFFFFFFF).to_bytes(4, "little"),
                      self._db_offset)
        except OSError as exc:
            if exc.errno == 19:  # ENODEV
                self.ring.dead = True
                raise QueueDeadError() from exc
            raise

    # -- closing ---------------------------------------------------------------------
    def close(self, drain_timeout: float = 1.0) -> None:
        """wd_release_queue: drain what is in flight (bounded), unshare,
        unmap, close, remove the mdev.  Idempotent."""
        ring = getattr(self, "ring", None)
        if ring is not None and ring.released:
            return
        if ring is not None and not ring.dead and ring.in_flight:
            deadline = time.monotonic() + drain_timeout
            try:
                while ring.in_flight and time.monotonic() < deadline:
                    ring.reap()
                    if ring.in_flight:
                        self._wait(deadline - time.monotonic())
            except QueueDeadError:
                pass
        self._teardown(remove=True)

    def _teardown(self, remove: bool) -> None:
        ring = getattr(self, "ring", None)
        if ring is not None:
            ring.released = True
        dead = ring is not None and ring.dead
        if self.device is not None and self.device.fd >= 0 and not dead:
            with contextlib.suppress(OSError):
                self.device.disable_irq(uapi.WD_IRQ_QUEUE_STATE)
        memory = getattr(self, "memory", None)
        if memory is not None:
            try:
                memory.unshare_all(unmap=not dead)
            except OSError:
                memory.unshare_all(unmap=False)
        for buf in self._buffers:
            buf.close()
        self._buffers.clear()
        self._staging.clear()
        for v in self._views:
            v.release()
        self._views = []
        for attr in ("_db_mm", "_cq_mm", "_sq_mm"):
            mm = getattr(self, attr, None)
            if mm is not None and not mm.closed:
                mm.close()
        if self.efd >= 0:
            os.close(self.efd)
            self.efd = -1
        for obj in (self.device, self.group, self.container):
            if obj is not None:
                obj.close()
        if remove:
            with contextlib.suppress(OSError):
                sysfs.remove_mdev(self.name, self.root)
        _live_queues.discard(self)

    def _abandon(self) -> None:
        """In a forked child: the mappings are gone; drop the object's use
        of them without touching the parent's queue."""
        ring = getattr(self, "ring", None)
        if ring is not None:
            ring.released = True
        self._views = []
        _live_queues.discard(self)

    @property
    def released(self) -> bool:
        return self.ring.released

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<wrapdrive.Queue {self.algo_type} {self.parent}/{self.name} "
                f"entries={getattr(self, 'entries', '?')}>")

    # -- the non-blocking forms ---------------------------------------------------------
    def _check_opcode(self, req: Request) -> None:
        if req.opcode not in self.opcodes:
            raise BadRequestError(f"opcode {req.opcode} is not one this {self.algo_type!r} "
                                  f"queue accepts ({self.opcodes})")

    def send(self, req: Request) -> bool:
        """Post ``req``; False at once if the ring is full."""
        self._check_opcode(req)
        return self.ring.try_send(req)

    def recv(self) -> Request | None:
        """A completed request, or None at once if none has completed."""
        return self.ring.try_recv()

    def send_batch(self, reqs: Sequence[Request]) -> int:
        """Post as many of ``reqs`` as fit with one doorbell store."""
        ops = self.opcodes
        for r in reqs:
            if r.opcode not in ops:
                self._check_opcode(r)
        return self.ring.send_batch(reqs)

    def recv_batch(self, max_n: int = 0) -> list[Request]:
        return self.ring.recv_batch(max_n)

    # -- sleeping ------------------------------------------------------------------------
    def _wait(self, timeout: float | None) -> None:
        """Sleep until the queue's state changes (or ``timeout``): arm
        irq_request, re-check, poll the eventfd.  ~0% CPU while asleep."""
        ring = self.ring
        if not ring.arm_irq():
            if ring.dead:
                raise QueueDeadError()
            return
        if timeout is not None and timeout <= 0:
            return
        r, _, _ = select.select([self.efd], [], [], timeout)
        if r:
            self._drain_eventfd()
            # Ask the kernel before touching the ring again: a dead queue's
            # mappings are zapped and a read would be SIGBUS.
            self._probe_alive()

    def _drain_eventfd(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.efd)

    def _probe_alive(self) -> None:
        """After a wake-up: ask the kernel whether the queue still exists
        (a dead queue's ioctls fail with ENODEV) before touching its mappings
        again.  Only the sleeping path pays for this ioctl."""
        assert self.device is not None
        try:
            self.device.info()
        except QueueDeadError:
            self.ring.dead = True
            raise

    def _spin(self, cond_send: bool) -> bool:
        ring = self.ring
        end = time.perf_counter() + SPIN_SECONDS
        while time.perf_counter() < end:
            if ring.completion_pending():
                return True
            if cond_send and ring.space:
                return True
        return False

    def send_sync(self, req: Request, timeout: float | None = None) -> None:
        """Post ``req``, waiting (spin, then sleep) while the ring is full."""
        self._check_opcode(req)
        ring = self.ring
        if ring.try_send(req):
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        spun = False
        while not ring.try_send(req):
            if not spun:
                spun = True
                self._spin(True)
                continue
            self._wait(None if deadline is None else deadline - time.monotonic())
            if deadline is not None and time.monotonic() >= deadline and not ring.space:
                ring.reap()
                if ring.try_send(req):
                    return
                raise TimeoutError("queue stayed full")

    def recv_sync(self, timeout: float | None = None) -> Request:
        """The next completed request, waiting (spin, then sleep) for one."""
        ring = self.ring
        req = ring.try_recv()
        if req is not None:
            return req
        self._spin(False)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            req = ring.try_recv()
            if req is not None:
                return req
            if ring.dead:
                raise QueueDeadError()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("no request completed in time")
            self._wait(remaining)

    def wait_for(self, req: Request, timeout: float | None = None) -> Request:
        """Wait until ``req`` (already sent) completes; other completions
        stay queued for recv.  Returns ``req``."""
        ring = self.ring
        deadline = None if timeout is None else time.monotonic() + timeout
        spun = False
        while req.tag in ring.inflight and ring.inflight[req.tag] is req:
            if ring.reap():
                continue
            if ring.dead:
                raise QueueDeadError()
            if not spun:
                spun = True
                self._spin(False)
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("request did not complete in time")
            self._wait(remaining)
        with contextlib.suppress(ValueError):
            ring.done.remove(req)
        return req

    def run(self, req: Request, timeout: float | None = None) -> Request:
        """Send ``req`` and wait for it; raises RequestFailedError on a bad status."""
        self.send_sync(req, timeout)
        self.wait_for(req, timeout)
        if req.status != uapi.WD_STS_OK:
            raise RequestFailedError(req.status, f"{self.algo_type} request")
        return req

    # -- asyncio ---------------------------------------------------------------------------
    def _on_eventfd(self) -> None:
        self._drain_eventfd()
        waiters, self._async_waiters = self._async_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        if not self._async_waiters and self._async_loop is not None:
            self._async_loop.remove_reader(self.efd)
            self._async_loop = None

    async def _wait_async(self) -> None:
        ring = self.ring
        if not ring.arm_irq():
            if ring.dead:
                raise QueueDeadError()
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._async_waiters.append(fut)
        if self._async_loop is None:
            loop.add_reader(self.efd, self._on_eventfd)
            self._async_loop = loop
        await fut
        self._probe_alive()

    async def recv_async(self) -> Request:
        """The next completed request; the event loop sleeps on the eventfd."""
        while True:
            req = self.ring.try_recv()
            if req is not None:
                return req
            if self.ring.dead:
                raise QueueDeadError()
            await self._wait_async()

    async def send_async(self, req: Request) -> None:
        """Post ``req``, letting the loop run while the ring is full."""
        self._check_opcode(req)
        while not self.ring.try_send(req):
            await self._wait_async()

    async def run_async(self, req: Request) -> Request:
        await self.send_async(req)
        ring = self.ring
        while ring.inflight.get(req.tag) is req:
            if not ring.reap():
                await self._wait_async()
        with contextlib.suppress(ValueError):
            ring.done.remove(req)
        if req.status != uapi.WD_STS_OK:
            raise RequestFailedError(req.status, f"{self.algo_type} request")
        return req

    # -- memory ------------------------------------------------------------------------------
    def alloc(self, size: int) -> Buffer:
        """A page-aligned buffer shared with this queue's device (freed with
        the queue)."""
        if self.ring.released:
            raise QueueReleasedError("queue was released")
        buf = Buffer(size)
        try:
            self.memory.share(buf.addr, buf.size)
        except BaseException:
            buf.close()
            raise
        self._buffers.append(buf)
        return buf

    def free(self, buf: Buffer) -> None:
        self.memory.unshare(buf.addr, buf.size)
        self._buffers.remove(buf)
        buf.close()

    def device_address(self, addr: int, length: int = 1) -> int:
        """The address the device uses for process address ``addr``."""
        return self.memory.translate(addr, length)

    def _stage(self, key: str, size: int) -> Buffer:
        buf = self._staging.get(key)
        if buf is None or buf.size < size:
            if buf is not None:
                self.free(buf)
            want = max(64 << 10, 1 << (max(size, 1) - 1).bit_length())
            buf = self.alloc(page_round_up(want))
            self._staging[key] = buf
        return buf

    def _need(self, algo: str) -> None:
        if self.algo_type != algo:
            raise BadRequestError(f"this queue does {self.algo_type!r}, not {algo!r}; "
                                  f"request a queue for {algo!r}")

    @staticmethod
    def _check_len(n: int) -> None:
        if n > uapi.WD_MAX_LEN:
            raise RequestTooLargeError(
                f"{n} bytes is over the device's per-request limit WD_MAX_LEN "
                f"({uapi.WD_MAX_LEN} bytes)")

    # -- the Pythonic operations -----------------------------------------------------------------
    def sha256(self, data: bytes | bytearray | memoryview) -> bytes:
        """SHA-256 digest of ``data`` (at most WD_MAX_LEN bytes)."""
        self._need("sha256")
        n = len(data)
        self._check_len(n)
        src = self._stage("in", n)
        dst = self._stage("out", uapi.WD_SHA256_DIGEST_LEN)
        src.write(data)
        self.run(Request(uapi.WD_OP_SHA256, src.addr, n, dst.addr, uapi.WD_SHA256_DIGEST_LEN))
        return dst.read(uapi.WD_SHA256_DIGEST_LEN)

    def crc32c(self, data: bytes | bytearray | memoryview) -> int:
        """CRC-32C (Castagnoli) of ``data`` (at most WD_MAX_LEN bytes)."""
        self._need("crc32c")
        n = len(data)
        self._check_len(n)
        src = self._stage("in", n)
        src.write(data)
        return self.run(Request(uapi.WD_OP_CRC32C, src.addr, n)).result

    def memcpy(self, dst: Buffer, src: Buffer, n: int | None = None) -> None:
        """Device copy between two buffers shared with this queue."""
        self._need("memcpy")
        length = min(src.size, dst.size) if n is None else n
        self._check_len(length)
        self.run(Request(uapi.WD_OP_MEMCPY, src.addr, length, dst.addr, length))

    def copy(self, data: bytes | bytearray | memoryview) -> bytes:
        """``data`` copied by the device (a bytes object)."""
        self._need("memcpy")
        n = len(data)
        self._check_len(n)
        src = self._stage("in", n)
        dst = self._stage("out", n)
        src.write(data)
        req = self.run(Request(uapi.WD_OP_MEMCPY, src.addr, n, dst.addr, n))
        return dst.read(req.out_len)

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        """A zlib stream (RFC 1950) of ``data``; zlib.decompress reads it."""
        self._need("zlib")
        n = len(data)
        self._check_len(n)
        bound = min(uapi.WD_MAX_LEN, n + (n >> 3) + 5 * (n // 16000 + 1) + 64)
        src = self._stage("in", n)
        dst = self._stage("out", bound)
        src.write(data)
        req = self.run(Request(uapi.WD_OP_DEFLATE, src.addr, n, dst.addr, bound))
        return dst.read(req.out_len)

    def decompress(self, data: bytes | bytearray | memoryview,
                   max_size: int = uapi.WD_MAX_LEN) -> bytes:
        """Inflate a zlib stream; the output may be up to ``max_size``."""
        self._need("zlib")
        n = len(data)
        self._check_len(n)
        src = self._stage("in", n)
        src.write(data)
        out = min(max_size, max(4 * n, 64 << 10))
        while True:
            dst = self._stage("out", out)
            req = Request(uapi.WD_OP_INFLATE, src.addr, n, dst.addr, out)
            self.send_sync(req)
            self.wait_for(req)
            if req.status == uapi.WD_STS_NOSPC and out < max_size:
                out = min(max_size, out * 4)
                continue
            if req.status != uapi.WD_STS_OK:
                raise RequestFailedError(req.status, "inflate")
            return dst.read(req.out_len)

    def map(self, opcode: int, chunks: Iterable[bytes | bytearray | memoryview],
            out_len: int = 0) -> list[Request]:
        """Run ``opcode`` over many chunks with batched submission: chunks are
        packed into one shared buffer, submitted up to a ring at a time with
        one doorbell store per batch, completions reaped in bulk.  Returns
        the completed requests in input order (status checked by caller)."""
        items = [memoryview(c).cast("B") for c in chunks]
        for it in items:
            self._check_len(len(it))
        total_in = sum(len(it) for it in items)
        src = self._stage("map-in", total_in or 1)
        dst = self._stage("map-out", out_len * len(items) or 1) if out_len else None
        reqs: list[Request] = []
        off = 0
        for i, it in enumerate(items):
            n = len(it)
            src.view[off:off + n] = it
            d = dst.addr + i * out_len if dst is not None else 0
            reqs.append(Request(opcode, src.addr + off, n, d, out_len, context=i))
            off += n
        self._run_all(reqs)
        return reqs

    def _run_all(self, reqs: list[Request]) -> None:
        """Submit all of ``reqs`` in ring-sized batches and wait for all."""
        ring = self.ring
        for r in reqs[:1]:
            self._check_opcode(r)
        total = len(reqs)
        sent = k = 0
        spun = False
        while k < total:
            if sent < total and ring.space:
                sent += ring.send_batch(reqs[sent:sent + ring.space])
            if ring.reap():
                spun = False
            while k < sent and reqs[k].status >= 0:
                k += 1
            if k < total and not ring.completion_pending() and (sent == total or not ring.space):
                if not spun:
                    spun = True
                    self._spin(False)
                else:
                    self._wait(None)
        mine = {id(r) for r in reqs}
        keep = [r for r in ring.done if id(r) not in mine]
        ring.done.clear()
        ring.done.extend(keep)

    def crc32c_many(self, chunks: Iterable[bytes | bytearray | memoryview]) -> list[int]:
        self._need("crc32c")
        reqs = self.map(uapi.WD_OP_CRC32C, chunks)
        for r in reqs:
            if r.status:
                raise RequestFailedError(r.status, "crc32c")
        return [r.result for r in reqs]

    def sha256_many(self, chunks: Iterable[bytes | bytearray | memoryview]) -> list[bytes]:
        self._need("sha256")
        reqs = self.map(uapi.WD_OP_SHA256, chunks, uapi.WD_SHA256_DIGEST_LEN)
        dst = self._staging["map-out"]
        out = []
        for i, r in enumerate(reqs):
            if r.status:
                raise RequestFailedError(r.status, "sha256")
            out.append(dst.read(32, i * 32))
        return out

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "parent": self.parent, "type": self.mdev_type,
                "algo_type": self.algo_type, "capa_flags": self.capa_flags,
                "entries": self.entries, "numa_zone": self.numa_zone,
                "priority": self.priority, "kicks": self.ring.kicks,
                **self.memory.stats()}

