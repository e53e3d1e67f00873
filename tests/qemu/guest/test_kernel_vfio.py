"""VFIO device interface of a WrapDrive queue (runs in the guest, as root)."""
import ctypes
import errno
import mmap
import os
import select
import struct
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402


@pytest.fixture
def q():
    qq = kv.Queue("wd_dummy.0", "crc32c")
    yield qq
    qq.close()


def test_get_info(q):
    b = kv.buf(struct.pack("<IIII", 16, 0, 0, 0))
    kv.ioctl(q.dev, kv.VFIO_DEVICE_GET_INFO, b)
    _, flags, nreg, nirq = struct.unpack("<IIII", b.raw)
    assert (nreg, nirq) == (kv.WD_NUM_REGIONS, kv.WD_NUM_IRQS) == (3, 1)
    assert flags & kv.VFIO_DEVICE_FLAGS_PLATFORM and flags & kv.VFIO_DEVICE_FLAGS_RESET
    b = kv.buf(struct.pack("<IIII", 8, 0, 0, 0))
    assert kv.errno_of(kv.ioctl, q.dev, kv.VFIO_DEVICE_GET_INFO, b) == errno.EINVAL
    assert kv.errno_of(kv.ioctl, q.dev, kv.VFIO_DEVICE_GET_INFO, 16) == errno.EFAULT
    unknown = kv.VFIO_DEVICE_RESET + 30  # a VFIO ioctl number no one defines
    assert kv.errno_of(kv.ioctl, q.dev, unknown) == errno.ENOTTY


def test_region_info(q):
    pg = mmap.PAGESIZE
    rw = kv.VFIO_REGION_INFO_FLAG_READ | kv.VFIO_REGION_INFO_FLAG_WRITE | \
        kv.VFIO_REGION_INFO_FLAG_MMAP
    ro = kv.VFIO_REGION_INFO_FLAG_READ | kv.VFIO_REGION_INFO_FLAG_MMAP
    assert q.entries == 1024
    flags, size, off0 = q.region_info(kv.WD_REGION_DOORBELL)
    assert (flags, size) == (rw, pg)
    flags, size, off1 = q.region_info(kv.WD_REGION_CQ)
    assert (flags, size) == (ro, pg + q.entries * kv.CQE.size)
    assert q.cq_off == pg
    flags, size, off2 = q.region_info(kv.WD_REGION_SQ)
    assert (flags, size) == (rw, q.entries * kv.DESC.size)
    assert len({off0, off1, off2}) == 3
    assert kv.errno_of(q.region_info, kv.WD_NUM_REGIONS) == errno.EINVAL
    assert kv.errno_of(q.region_info, 0xFFFFFFFF) == errno.EINVAL
    assert kv.errno_of(q.region_info, 0, argsz=16) == errno.EINVAL


def test_irq_info(q):
    def info(index, argsz=16):
        b = kv.buf(struct.pack("<IIII", argsz, 0, index, 0))
        kv.ioctl(q.dev, kv.VFIO_DEVICE_GET_IRQ_INFO, b)
        return struct.unpack("<IIII", b.raw)
    _, flags, _, count = info(0)
    assert flags & kv.VFIO_IRQ_INFO_EVENTFD and flags & kv.VFIO_IRQ_INFO_MASKABLE
    assert count == 1
    assert kv.errno_of(info, 1) == errno.EINVAL
    assert kv.errno_of(info, 0, argsz=12) == errno.EINVAL


def test_set_irqs_validation(q):
    T = kv.VFIO_IRQ_SET_ACTION_TRIGGER
    E = kv.VFIO_IRQ_SET_DATA_EVENTFD
    N = kv.VFIO_IRQ_SET_DATA_NONE
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        assert kv.errno_of(q.set_irqs, T | E, index=1, data=struct.pack("<i", efd)) == errno.EINVAL
        assert kv.errno_of(q.set_irqs, T | E, count=2, data=struct.pack("<ii", efd, efd)) == errno.EINVAL
        assert kv.errno_of(q.set_irqs, T | E | N, data=struct.pack("<i", efd)) == errno.EINVAL
        assert kv.errno_of(q.set_irqs, T | E, data=struct.pack("<i", efd), argsz=12) == errno.EINVAL
        assert kv.errno_of(q.set_irqs, T | E, data=struct.pack("<i", -7)) == errno.EINVAL
        assert kv.errno_of(q.set_irqs, T | E, data=struct.pack("<i", 0)) in (errno.EINVAL, errno.EBADF)
        assert kv.errno_of(q.set_irqs, kv.VFIO_IRQ_SET_ACTION_MASK | E, data=struct.pack("<i", efd)) == errno.EINVAL
        assert kv.errno_of(q.set_irqs, 1 << 10 | T | N) == errno.EINVAL
    finally:
        os.close(efd)


def _wait(efd, timeout):
    r, _, _ = select.select([efd], [], [], timeout)
    return os.eventfd_read(efd) if r else 0


def test_irq_trigger_mask_unmask(q):
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        q.set_eventfd(efd)
        # DATA_NONE trigger fires the eventfd (a loopback test).
        q.set_irqs(kv.VFIO_IRQ_SET_DATA_NONE | kv.VFIO_IRQ_SET_ACTION_TRIGGER)
        assert _wait(efd, 2) == 1
        # irq_request: one completion, one signal, irq_request cleared.
        kv.store32(q.db, kv.DB_IRQ_REQUEST, 1)
        c = q.run(kv.WD_OP_NOP, tag=1)
        assert c[:2] == (1, kv.WD_STS_OK)
        assert _wait(efd, 5) == 1
        assert struct.unpack_from("<I", q.db, kv.DB_IRQ_REQUEST)[0] == 0
        # Disarmed (the re-check after arming found a completion): no signal.
        kv.store32(q.db, kv.DB_IRQ_REQUEST, 1)
        kv.store32(q.db, kv.DB_IRQ_REQUEST, 0)
        assert q.run(kv.WD_OP_NOP, tag=2)[:2] == (2, 0)
        time.sleep(0.2)
        assert _wait(efd, 0.3) == 0
        # Masked: no signal, irq_request stays.
        q.set_irqs(kv.VFIO_IRQ_SET_DATA_NONE | kv.VFIO_IRQ_SET_ACTION_MASK)
        kv.store32(q.db, kv.DB_IRQ_REQUEST, 1)
        q.submit([kv.desc(3)])
        time.sleep(0.2)
        assert _wait(efd, 0.3) == 0
        # Unmask with a completion still unconsumed: signalled now.
        q.set_irqs(kv.VFIO_IRQ_SET_DATA_NONE | kv.VFIO_IRQ_SET_ACTION_UNMASK)
        assert _wait(efd, 5) == 1
        q.reap(1)
        # Teardown with fd -1, then DATA_NONE trigger has nothing to signal.
        q.set_eventfd(-1)
        q.set_irqs(kv.VFIO_IRQ_SET_DATA_NONE | kv.VFIO_IRQ_SET_ACTION_TRIGGER)
        assert _wait(efd, 0.3) == 0
        # Re-arm, then count=0 DATA_NONE tears down too: a later armed
        # completion signals nothing.
        q.set_eventfd(efd)
        q.set_irqs(kv.VFIO_IRQ_SET_DATA_NONE | kv.VFIO_IRQ_SET_ACTION_TRIGGER, count=0)
        kv.store32(q.db, kv.DB_IRQ_REQUEST, 1)
        assert q.run(kv.WD_OP_NOP, tag=4)[:2] == (4, 0)
        time.sleep(0.2)
        assert _wait(efd, 0.3) == 0
    finally:
        os.close(efd)


def test_mmap_bounds(q):
    pg = mmap.PAGESIZE
    sq, cq = kv.WD_REGION_SQ, kv.WD_REGION_CQ
    _, rsize, _ = q.regions[sq]
    q.map_region(sq, size=pg, off=pg)            # a page inside: fine
    q.map_region(sq)                             # the whole region: fine
    q.map_region(cq, prot=mmap.PROT_READ)
    bad = [
        dict(index=0, size=2 * pg),               # beyond the doorbell page
        dict(index=sq, size=pg, off=rsize),       # offset at the end
        dict(index=sq, size=rsize, off=pg),       # runs past the end
        dict(index=0, flags=mmap.MAP_PRIVATE),    # must be shared
    ]
    for kw in bad:
        assert kv.errno_of(q.map_region, **kw) == errno.EINVAL, kw
    # An index beyond the regions.
    with pytest.raises(OSError) as e:
        mmap.mmap(q.dev, pg, offset=q.regions[sq][2] + (q.regions[sq][2] - q.regions[cq][2]))
    assert e.value.errno == errno.EINVAL


def test_cq_region_is_read_only(q):
    """The device-written region cannot be mapped writable, written with
    pwrite, or made writable later."""
    cq = kv.WD_REGION_CQ
    assert kv.errno_of(q.map_region, cq) == errno.EACCES  # PROT_READ|PROT_WRITE
    off = q.regions[cq][2]
    assert kv.errno_of(os.pwrite, q.dev, b"\0" * 4, off + kv.HDR_STATUS) == errno.EINVAL
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    addr = libc.mmap(None, mmap.PAGESIZE, mmap.PROT_READ, mmap.MAP_SHARED, q.dev, off)
    assert addr not in (None, ctypes.c_void_p(-1).value)
    try:
        ret = libc.mprotect(addr, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_WRITE)
        assert ret == -1 and ctypes.get_errno() == errno.EACCES
    finally:
        libc.munmap(addr, mmap.PAGESIZE)
    # A version-1 user mapped region 1 (then header+SQ+CQ) writable: it gets
    # EACCES; the version it must check reads 2.
    assert kv.errno_of(q.map_region, 1) == errno.EACCES
    assert struct.unpack("<I", os.pread(q.dev, 4, off + 4))[0] == kv.WD_ABI_VERSION == 2


def test_read_write_regions(q):
    off = q.regions[kv.WD_REGION_CQ][2]
    assert struct.unpack("<I", os.pread(q.dev, 4, off))[0] == kv.WD_RING_MAGIC
    assert kv.errno_of(os.pread, q.dev, 4, off + q.regions[kv.WD_REGION_CQ][1]) == errno.EINVAL
    db = q.regions[kv.WD_REGION_DOORBELL][2]
    assert kv.errno_of(os.pwrite, q.dev, b"xx", db + 1) == errno.EINVAL
    assert kv.errno_of(os.pread, q.dev, 4, 5 << 40) == errno.EINVAL
    # The doorbell reads back what was written.
    kv.store32(q.db, kv.DB_IRQ_REQUEST, 0)
    assert os.pread(q.dev, 4, db + kv.DB_IRQ_REQUEST) == b"\0\0\0\0"
    # The slow-path kick: the value pwritten becomes sq_tail, no mmap store.
    sq = q.regions[kv.WD_REGION_SQ][2]
    kv.DESC.pack_into(q.sq, 0, tag=9, opcode=kv.WD_OP_NOP)
    kv.DESC.pack_into(q.sq, kv.DESC.size, tag=10, opcode=kv.WD_OP_NOP)
    assert os.pread(q.dev, 4, sq) == struct.pack("<I", 9)
    os.pwrite(q.dev, struct.pack("<I", 2), db)
    assert struct.unpack_from("<I", q.db, kv.DB_SQ_TAIL)[0] == 2
    q.sq_tail = 2
    assert [c[:2] for c in q.reap(2)] == [(9, 0), (10, 0)]


def test_engine_idle_and_kick(q):
    time.sleep(0.1)
    assert q.status() & kv.WD_Q_ENGINE_IDLE
    for i in range(20):
        q.submit([kv.desc(i)])
        assert q.reap(1, timeout=5)[0][0] == i


def test_indices_at_open_reset_and_reopen(q):
    hdr = kv.HDR.unpack_from(q.cqr)
    assert (hdr["sq_head"], hdr["cq_tail"]) == (0, 0)
    for _ in range(3):
        q.run(kv.WD_OP_NOP)
    assert kv.HDR.unpack_from(q.cqr)["sq_head"] == q.cq_tail() == 3
    kv.ioctl(q.dev, kv.VFIO_DEVICE_RESET)
    hdr = kv.HDR.unpack_from(q.cqr)
    assert (hdr["sq_head"], hdr["cq_tail"]) == (0, 0)
    assert q.db[:] == bytes(len(q.db))
    q.sq_tail = q.cq_head = 0
    assert q.run(kv.WD_OP_NOP, tag=3)[:2] == (3, 0)
    # Reopened: a new ring, all indices 0 again.
    q.own_mdev = False
    q.close()
    q.own_mdev = True  # the fixture's close removes it
    with kv.Queue(mdev=q.uuid) as q2:
        hdr = kv.HDR.unpack_from(q2.cqr)
        assert (hdr["sq_head"], hdr["cq_tail"]) == (0, 0)
        assert struct.unpack_from("<I", q2.db, kv.DB_SQ_TAIL)[0] == 0
        assert q2.run(kv.WD_OP_NOP, tag=5)[:2] == (5, 0)


def test_fork_child_gets_eperm(q):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        res = []
        try:
            res.append(kv.errno_of(kv.ioctl, q.dev, kv.VFIO_DEVICE_RESET))
            res.append(kv.errno_of(os.pread, q.dev, 4, q.regions[kv.WD_REGION_CQ][2]))
            res.append(kv.errno_of(os.pwrite, q.dev, b"\0\0\0\0", q.regions[0][2]))
            res.append(kv.errno_of(mmap.mmap, q.dev, mmap.PAGESIZE, offset=q.regions[0][2]))
            # The parent's mapping is not inherited (VM_DONTCOPY).
            addr = ctypes.addressof(ctypes.c_char.from_buffer(q.sq))
            res.append(int(open("/proc/self/maps").read().find(f"{addr:x}-") >= 0))
        finally:
            os.write(w, struct.pack("<5i", *(res + [0] * (5 - len(res)))))
            os._exit(0)
    os.close(w)
    res = struct.unpack("<5i", os.read(r, 20))
    os.waitpid(pid, 0)
    os.close(r)
    assert res[:4] == (errno.EPERM,) * 4
    assert res[4] == 0
    assert q.run(kv.WD_OP_NOP, tag=5)[:2] == (5, 0)
