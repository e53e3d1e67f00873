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
    assert (nreg, nirq) == (2, 1)
    assert flags & (1 << 2) and flags & 1  # PLATFORM, RESET
    b = kv.buf(struct.pack("<IIII", 8, 0, 0, 0))
    assert kv.errno_of(kv.ioctl, q.dev, kv.VFIO_DEVICE_GET_INFO, b) == errno.EINVAL
    assert kv.errno_of(kv.ioctl, q.dev, kv.VFIO_DEVICE_GET_INFO, 16) == errno.EFAULT
    assert kv.errno_of(kv.ioctl, q.dev, kv._io(40)) == errno.ENOTTY


def test_region_info(q):
    pg = mmap.PAGESIZE
    flags, size, off = q.region_info(0)
    assert flags == 7 and size == pg
    flags, size, off1 = q.region_info(1)
    assert flags == 7 and size == pg + q.entries * 32 + q.entries * 16
    assert off != off1
    assert q.entries == 1024 and q.sq_off == pg and q.cq_off == pg + 1024 * 32
    assert kv.errno_of(q.region_info, 2) == errno.EINVAL
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
        kv.store32(q.db, 0x80, 1)
        c = q.run(kv.WD_OP_NOP, tag=1)
        assert c[:2] == (1, kv.WD_STS_OK)
        assert _wait(efd, 5) == 1
        assert struct.unpack_from("<I", q.db, 0x80)[0] == 0
        # Masked: no signal, irq_request stays.
        q.set_irqs(kv.VFIO_IRQ_SET_DATA_NONE | kv.VFIO_IRQ_SET_ACTION_MASK)
        kv.store32(q.db, 0x80, 1)
        q.submit([(2, kv.WD_OP_NOP, 0, 0, 0, 0, 0)])
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
        # Re-arm, then count=0 DATA_NONE tears down too.
        q.set_eventfd(efd)
        q.set_irqs(kv.VFIO_IRQ_SET_DATA_NONE | kv.VFIO_IRQ_SET_ACTION_TRIGGER, count=0)
    finally:
        os.close(efd)


def test_mmap_bounds(q):
    pg = mmap.PAGESIZE
    _, rsize, _ = q.regions[1]
    q.map_region(1, size=pg, off=pg)             # a page inside: fine
    q.map_region(1)                              # the whole region: fine
    bad = [
        dict(index=0, size=2 * pg),               # beyond the doorbell page
        dict(index=1, size=pg, off=rsize),        # offset at the end
        dict(index=1, size=rsize, off=pg),        # runs past the end
        dict(index=0, flags=mmap.MAP_PRIVATE),    # must be shared
    ]
    for kw in bad:
        assert kv.errno_of(q.map_region, **kw) == errno.EINVAL, kw
    # An index beyond the regions.
    with pytest.raises(OSError) as e:
        mmap.mmap(q.dev, pg, offset=q.regions[1][2] * 2)
    assert e.value.errno == errno.EINVAL


def test_read_write_regions(q):
    off = q.regions[1][2]
    assert struct.unpack("<I", os.pread(q.dev, 4, off))[0] == kv.WD_RING_MAGIC
    assert kv.errno_of(os.pread, q.dev, 4, off + q.regions[1][1]) == errno.EINVAL
    assert kv.errno_of(os.pwrite, q.dev, b"xx", q.regions[0][2] + 1) == errno.EINVAL
    assert kv.errno_of(os.pread, q.dev, 4, 5 << 40) == errno.EINVAL
    # The slow-path kick: tail via pwrite only, no mmap store.
    q.submit([(9, kv.WD_OP_NOP, 0, 0, 0, 0, 0)], kick=False)
    os.pwrite(q.dev, struct.pack("<I", q.sq_tail), q.regions[0][2])
    assert q.reap(1)[0][:2] == (9, 0)


def test_engine_idle_and_kick(q):
    time.sleep(0.1)
    assert q.status() & kv.WD_Q_ENGINE_IDLE
    for i in range(20):
        q.submit([(i, kv.WD_OP_NOP, 0, 0, 0, 0, 0)])
        assert q.reap(1, timeout=5)[0][0] == i


def test_reset(q):
    q.run(kv.WD_OP_NOP)
    kv.ioctl(q.dev, kv.VFIO_DEVICE_RESET)
    assert q.cq_tail() == 0
    q.sq_tail = q.cq_head = 0
    assert q.run(kv.WD_OP_NOP, tag=3)[:2] == (3, 0)


def test_fork_child_gets_eperm(q):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        res = []
        try:
            res.append(kv.errno_of(kv.ioctl, q.dev, kv.VFIO_DEVICE_RESET))
            res.append(kv.errno_of(os.pread, q.dev, 4, q.regions[1][2]))
            res.append(kv.errno_of(os.pwrite, q.dev, b"\0\0\0\0", q.regions[0][2]))
            res.append(kv.errno_of(mmap.mmap, q.dev, mmap.PAGESIZE, offset=q.regions[0][2]))
            # The parent's mapping is not inherited (VM_DONTCOPY).
            addr = ctypes.addressof(ctypes.c_char.from_buffer(q.ring))
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
