"""Host UNIT tests of the ring index math and memory bookkeeping.

An anonymous mmap stands in for the two VFIO regions and the test plays the
device by hand.  This checks only the Python side's arithmetic (slots, wrap,
free-running indices, batching, bulk reaping, the kick and irq_request
stores); the real protocol against the kernel is tested in the VM
(tests/qemu/guest/test_userlib_*.py)."""

from __future__ import annotations

import mmap
import struct

import pytest
from wrapdrive import crc, errors, uapi
from wrapdrive.memory import IovaAllocator, SharedMemory
from wrapdrive.ring import Request, Ring, desc_struct

ENTRIES = 8
SQ_OFF = 4096
CQ_OFF = SQ_OFF + 4096
DESC_SIZE = uapi.DESC_STRUCT.size
CQE_SIZE = uapi.CQE_STRUCT.size
NO_CHAIN = (0,) * (uapi.DESC_VALUES - 7)  # ctx, seed, stream, level, flush, reserved


class FakeRegions:
    def __init__(self, start: int = 0) -> None:
        self.db_mm = mmap.mmap(-1, 4096)
        self.ring_mm = mmap.mmap(-1, 3 * 4096)
        self.db = memoryview(self.db_mm).cast("I")
        self.hdr = memoryview(self.ring_mm)[:256].cast("I")
        self.hdr[uapi.HDR_CQ_TAIL_WORD] = start
        self.hdr[uapi.HDR_SQ_HEAD_WORD] = start
        self.sq = memoryview(self.ring_mm)[SQ_OFF:SQ_OFF + ENTRIES * DESC_SIZE]
        self.cq = memoryview(self.ring_mm)[CQ_OFF:CQ_OFF + ENTRIES * CQE_SIZE]
        self.kicks: list[int] = []
        self.dev_sq_head = start

    def ring(self, translate: object = None) -> Ring:
        if translate is None:
            return Ring(self.db, self.hdr, self.sq, self.cq, ENTRIES, self.kicks.append)
        return Ring(self.db, self.hdr, self.sq, self.cq, ENTRIES, self.kicks.append,
                    translate)  # type: ignore[arg-type]

    # the device's side
    def consume(self) -> list[tuple[int, ...]]:
        out = []
        tail = self.db[uapi.DB_SQ_TAIL_WORD]
        while self.dev_sq_head != tail:
            slot = self.dev_sq_head & (ENTRIES - 1)
            out.append(uapi.DESC_STRUCT.unpack_from(self.sq, slot * DESC_SIZE))
            self.dev_sq_head = (self.dev_sq_head + 1) & 0xFFFFFFFF
        self.hdr[uapi.HDR_SQ_HEAD_WORD] = self.dev_sq_head
        return out

    def complete(self, tag: int, status: int = 0, out_len: int = 0, result: int = 0) -> None:
        tail = self.hdr[uapi.HDR_CQ_TAIL_WORD]
        uapi.CQE_STRUCT.pack_into(self.cq, (tail & (ENTRIES - 1)) * CQE_SIZE, tag, status, 0,
                                  out_len, result)
        self.hdr[uapi.HDR_CQ_TAIL_WORD] = (tail + 1) & 0xFFFFFFFF


def req(i: int) -> Request:
    return Request(uapi.WD_OP_CRC32C, 0x1000 + i, 64 + i)


@pytest.mark.parametrize("start", [0, 0xFFFFFFFC])
def test_send_fills_slots_and_stops_when_full(start: int) -> None:
    f = FakeRegions(start)
    r = f.ring()
    for i in range(ENTRIES):
        assert r.try_send(req(i))
    assert not r.try_send(req(99))  # full: refused at once
    assert f.db[uapi.DB_SQ_TAIL_WORD] == (start + ENTRIES) & 0xFFFFFFFF
    descs = f.consume()
    assert [d[0] for d in descs] == [(start + i) & 0xFFFFFFFF for i in range(ENTRIES)]
    assert descs[3] == ((start + 3) & 0xFFFFFFFF, uapi.WD_OP_CRC32C, 0, 0x1003, 0, 67, 0, *NO_CHAIN)
    assert not r.try_send(req(99))  # consumed but not completed: still full
    f.complete(descs[0][0], result=0xABC)
    assert r.try_send(req(100))  # the completion is reaped to make room
    done = r.try_recv()
    assert done is not None and done.result == 0xABC and done.src == 0x1000
    assert f.db[uapi.DB_CQ_HEAD_WORD] == (start + 1) & 0xFFFFFFFF
    assert f.kicks == []


def test_kick_only_when_engine_idle() -> None:
    f = FakeRegions()
    r = f.ring()
    r.try_send(req(0))
    assert f.kicks == []
    f.hdr[uapi.HDR_STATUS_WORD] = uapi.WD_Q_ENGINE_IDLE
    r.send_batch([req(1), req(2), req(3)])
    assert f.kicks == [4]  # one kick for the whole batch, with the new tail


def test_batch_wraps_with_one_doorbell_store() -> None:
    f = FakeRegions(5)
    r = f.ring()
    reqs = [req(i) for i in range(ENTRIES)]
    assert r.send_batch(reqs) == ENTRIES  # slots 5,6,7 then 0..4
    assert [q.tag for q in reqs] == list(range(5, 5 + ENTRIES))
    descs = f.consume()
    assert [d[3] for d in descs] == [0x1000 + i for i in range(ENTRIES)]
    assert r.send_batch([req(50)]) == 0


def test_batch_is_cut_to_free_space() -> None:
    f = FakeRegions()
    r = f.ring()
    assert r.send_batch([req(i) for i in range(3)]) == 3
    assert r.send_batch([req(i) for i in range(10)]) == ENTRIES - 3


def test_bulk_reap_and_weak_order() -> None:
    f = FakeRegions(0xFFFFFFFE)
    r = f.ring()
    reqs = [req(i) for i in range(6)]
    r.send_batch(reqs)
    tags = [d[0] for d in f.consume()]
    for t in reversed(tags):  # a weakly ordered device completes in any order
        f.complete(t, out_len=t & 0xFF, result=t)
    assert r.try_recv() is reqs[5]
    rest = r.recv_batch()
    assert rest == list(reversed(reqs[:5]))
    assert all(q.ok and q.result == q.tag for q in reqs)
    assert r.in_flight == 0 and r.try_recv() is None
    assert f.db[uapi.DB_CQ_HEAD_WORD] == (0xFFFFFFFE + 6) & 0xFFFFFFFF


def test_raw_batch_round_trip() -> None:
    f = FakeRegions(6)
    r = f.ring()
    first = r.send_raw(uapi.WD_OP_SHA256, [10, 20, 30], [1, 2, 3], [40, 50, 60], [32] * 3)
    assert first == 6
    assert f.consume() == [(6, 3, 0, 10, 40, 1, 32, *NO_CHAIN), (7, 3, 0, 20, 50, 2, 32, *NO_CHAIN),
                           (8, 3, 0, 30, 60, 3, 32, *NO_CHAIN)]
    for t in (6, 7, 8):
        f.complete(t, out_len=32)
    assert r.recv_raw() == (6, 0, 0, 32, 0, 7, 0, 0, 32, 0, 8, 0, 0, 32, 0)
    assert r.recv_raw() == ()
    with pytest.raises(BlockingIOError):
        r.send_raw(uapi.WD_OP_NOP, [0] * 9, [0] * 9)


def test_multi_descriptor_struct_is_cached_and_exact() -> None:
    s = desc_struct(5)
    assert s is desc_struct(5) and s.size == 5 * DESC_SIZE
    assert s.format == "<" + uapi.DESC_FORMAT * 5


def test_errors_dead_released_oversized() -> None:
    f = FakeRegions()
    r = f.ring()
    with pytest.raises(errors.RequestTooLargeError):
        r.try_send(Request(uapi.WD_OP_CRC32C, 0x1000, uapi.WD_MAX_LEN + 1))
    assert r.in_flight == 0  # nothing half-posted
    f.hdr[uapi.HDR_STATUS_WORD] = uapi.WD_Q_DEAD
    with pytest.raises(errors.QueueDeadError):
        r.try_send(req(0))
    with pytest.raises(errors.QueueDeadError):
        r.try_send(req(1))
    r2 = FakeRegions().ring()
    r2.released = True
    with pytest.raises(errors.QueueReleasedError):
        r2.try_send(req(0))
    with pytest.raises(errors.QueueReleasedError):
        r2.try_recv()


def test_corrupt_cq_tail_marks_the_queue_dead() -> None:
    f = FakeRegions()
    r = f.ring()
    f.hdr[uapi.HDR_CQ_TAIL_WORD] = ENTRIES + 1
    with pytest.raises(errors.QueueDeadError, match="beyond the ring"):
        r.reap()


def test_arm_irq_stores_request_and_rechecks() -> None:
    f = FakeRegions()
    r = f.ring()
    assert r.arm_irq() and f.db[uapi.DB_IRQ_REQUEST_WORD] == 1
    r.try_send(req(0))
    f.consume()
    f.complete(0)
    assert not r.arm_irq()  # a completion arrived: do not sleep


def test_translation_through_shared_memory() -> None:
    calls: list[tuple[str, int, int]] = []
    mem = SharedMemory(lambda v, i, s: calls.append(("map", v, s)),
                       lambda i, s: calls.append(("unmap", i, s)))
    f = FakeRegions()
    r = f.ring(mem.translate)
    with pytest.raises(errors.NotSharedError, match="wd_mem_share"):
        r.try_send(req(0))
    assert r.in_flight == 0
    dev = mem.share(0x7F0000001000, 8192)
    assert calls == [("map", 0x7F0000001000, 8192)]
    r.try_send(Request(uapi.WD_OP_MEMCPY, 0x7F0000001010, 16, 0x7F0000002000, 16))
    (d,) = f.consume()
    assert d[3] == dev + 0x10 and d[4] == dev + 0x1000
    with pytest.raises(errors.NotSharedError):
        r.try_send(Request(uapi.WD_OP_MEMCPY, 0x7F0000002000, 8192, 0x7F0000001000, 16))
    mem.unshare(0x7F0000001000, 8192)
    assert calls[-1] == ("unmap", dev, 8192)
    assert mem.stats()["bytes_shared"] == 0


def test_shared_memory_refcount_overlap_and_share_all() -> None:
    mem = SharedMemory(None, None)
    a = mem.share(0x10000, 100)
    assert mem.share(0x10000, 4000) == a  # same page span: reference counted
    with pytest.raises(errors.BadRequestError, match="overlaps"):
        mem.share(0x10000, 3 * 4096)
    mem.unshare(0x10000, 100)
    assert mem.translate(0x10010, 8) == a + 0x10
    mem.unshare(0x10000, 100)
    with pytest.raises(errors.NotSharedError):
        mem.unshare(0x10000, 100)
    sva = SharedMemory(None, None, share_all=True)
    assert sva.share(0x1234, 10) == 0x1234 and sva.translate(0x5678, 1) == 0x5678


def test_iova_allocator_first_fit_and_coalescing() -> None:
    a = IovaAllocator(0x100000, 0x110000)
    x = a.alloc(1)
    y = a.alloc(8192)
    z = a.alloc(4096)
    assert (x, y, z) == (0x100000, 0x101000, 0x103000)
    a.free(y, 8192)
    assert a.alloc(4096) == 0x101000  # first fit reuses the hole
    a.free(0x101000, 4096)
    a.free(x, 4096)
    a.free(z, 4096)
    assert a.free_ranges == [(0x100000, 0x110000)]
    with pytest.raises(ValueError, match="double free"):
        a.free(x, 4096)
    with pytest.raises(MemoryError):
        a.alloc(0x20000)


def test_crc32c_reference_and_combine() -> None:
    assert crc.crc32c_sw(b"123456789") == 0xE3069283
    assert crc.crc32c_sw(b"") == 0
    a, b = bytes(range(256)) * 3, b"tail" * 41
    assert crc.crc32c_combine(crc.crc32c_sw(a), crc.crc32c_sw(b), len(b)) == \
        crc.crc32c_sw(a + b)
    assert crc.crc32c_combine(5, 0, 0) == 5


def test_struct_formats_little_endian() -> None:
    assert struct.calcsize("<" + uapi.DESC_FORMAT) == 64
    assert struct.calcsize("<" + uapi.CQE_FORMAT) == 16
