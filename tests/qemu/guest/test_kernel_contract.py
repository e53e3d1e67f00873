"""The contract of uapi/wrapdrive.h and docs/ABI, held by tests: a queue's own
regions are never DMA buffers, the kick, the sleeping protocol, what a WD_CAPA_SHARE_ALL
queue still needs, rmmod's EAGAIN, sysfs parsing, and that udev never sees a device
before its capabilities exist."""
import ctypes
import errno
import mmap
import os
import select
import struct
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402
import wd_child  # noqa: E402
import wd_measure  # noqa: E402

# These start processes, unbind devices and move up to WD_MAX_LEN per request: under
# TCG on a loaded 2-core host one test can take minutes (the harness's default is 60 s).
pytestmark = pytest.mark.slow(300)

MiB = 1 << 20
libc = ctypes.CDLL(None, use_errno=True)




def vaddr(m):
    return ctypes.addressof(ctypes.c_char.from_buffer(m))


# -- a queue's own regions are not DMA buffers ------------------------------------------

libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


class CqView:
    """A read-only mapping of a queue's CQ region with a known address (Python's
    mmap gives no address for read-only maps).  Unmap it before closing the
    queue: a mapping keeps the device open."""

    def __init__(self, q):
        _, self.size, off = q.regions[kv.WD_REGION_CQ]
        addr = libc.mmap(None, self.size, mmap.PROT_READ, mmap.MAP_SHARED, q.dev, off)
        assert addr not in (None, ctypes.c_void_p(-1).value)
        self.addr = addr

    def close(self):
        if self.addr:
            libc.munmap(self.addr, self.size)
            self.addr = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _ring_targets(q, cq):
    """(name, vaddr, size) of q's three regions, as mapped in this process."""
    return [("doorbell", vaddr(q.db), len(q.db)), ("sq", vaddr(q.sq), len(q.sq)),
            ("cq", cq.addr, cq.size)]


UNUSED_SLOTS = 16 * 64  # SQ bytes past the slots the tests' requests use


def _own_regions_refused(u=None, fill_cache=True):
    """IOVAs mapped onto the queue's own ring mappings: every request that reads
    or writes them completes BAD_ADDR and leaves the ring as it was.  First a
    16 MiB request fills whatever the kernel caches."""
    out = {}
    q = kv.Queue("wd_dummy.0", "memcpy", mdev=u)
    cq = CqView(q)
    try:
        if fill_cache:
            n = kv.WD_MAX_LEN
            _, big, _ = q.dma_buffer(n)
            _, big2, _ = q.dma_buffer(n)
            assert q.run(kv.WD_OP_MEMCPY, big, n, big2, n).status == 0
        _, buf, _ = q.dma_buffer(8192, b"x" * 8192)
        assert q.run(kv.WD_OP_MEMCPY, buf, 64, buf + 4096, 64).status == 0
        iova = 1 << 36
        for name, va, size in _ring_targets(q, cq):
            q.map_dma(va, iova, size)
            before = bytes(q.sq[UNUSED_SLOTS:])
            c_write = q.run(kv.WD_OP_MEMCPY, buf, 64, iova + size - 4096, 64, tag=1)
            c_read = q.run(kv.WD_OP_MEMCPY, iova, 64, buf, 64, tag=2)
            out[name] = [c_write.status, c_read.status]
            assert bytes(q.sq[UNUSED_SLOTS:]) == before, name
            q.unmap_dma(iova, size)
            iova += 1 << 32
    finally:
        cq.close()
        q.close()
    return out


def test_own_regions_are_refused_as_buffers():
    out = _own_regions_refused()
    for name, sts in out.items():
        assert sts == [kv.WD_STS_BAD_ADDR, kv.WD_STS_BAD_ADDR], (name, sts)


def test_own_regions_are_refused_as_buffers_unprivileged():
    """Without CAP_IPC_LOCK and with RLIMIT_MEMLOCK 0 every pin of ordinary
    memory fails for lack of budget and the kernel copies without pinning; the
    ring pages are still refused, not copied to."""
    u = kv.create_mdev("wd_dummy.0", "memcpy")
    try:
        with wd_child.group_owned_by(u):
            out = wd_child.run(_own_regions_refused, u, False, uid=wd_child.NOBODY, memlock=0)
    finally:
        kv.remove_mdev(u)
    for name, sts in out.items():
        assert sts == [kv.WD_STS_BAD_ADDR, kv.WD_STS_BAD_ADDR], (name, sts)


@pytest.mark.parametrize("tname", ["memcpy-sva", "sha256-sva"])
def test_own_regions_are_refused_on_a_share_all_queue(tname):
    with kv.Queue("wd_dummy.1", tname) as q:
        other = kv.Queue("wd_dummy.1", "memcpy")
        cq = CqView(q)
        try:
            src = mmap.mmap(-1, 4096)
            src[:] = b"y" * 4096
            sa = vaddr(src)
            op = kv.WD_OP_MEMCPY if tname.startswith("memcpy") else kv.WD_OP_SHA256
            targets = [("sq", vaddr(q.sq)), ("db", vaddr(q.db)), ("cq", cq.addr),
                       ("other-sq", vaddr(other.sq))]
            sq_before = bytes(q.sq[16 * kv.DESC.size:])
            for name, va in targets:
                c = q.run(op, sa, 64, va + 3 * 64 if name != "cq" else va, 64)
                assert c.status == kv.WD_STS_BAD_ADDR, (name, c)
                c = q.run(op, va, 64, sa, 64)
                assert c.status == kv.WD_STS_BAD_ADDR, (name, c)
            assert bytes(q.sq[16 * kv.DESC.size:]) == sq_before
            assert q.run(op, sa, 64, sa + 2048, 64).status == 0
        finally:
            cq.close()
            other.close()


# -- opening ----------------------------------------------------------------------------

def test_share_all_queue_still_needs_container_and_iommu():
    u = kv.create_mdev("wd_dummy.0", "sha256-sva")
    try:
        grp = os.path.basename(os.readlink(f"{kv.MDEV_DEVICES}/{u}/iommu_group"))
        g = os.open(f"/dev/vfio/{grp}", os.O_RDWR)
        c = os.open("/dev/vfio/vfio", os.O_RDWR)
        try:
            name = ctypes.c_char_p(u.encode())
            assert kv.errno_of(kv.ioctl, g, kv.VFIO_GROUP_GET_DEVICE_FD, name) != 0
            kv.ioctl(g, kv.VFIO_GROUP_SET_CONTAINER, ctypes.pointer(ctypes.c_int(c)))
            assert kv.errno_of(kv.ioctl, g, kv.VFIO_GROUP_GET_DEVICE_FD, name) != 0
            kv.ioctl(c, kv.VFIO_SET_IOMMU, kv.VFIO_TYPE1v2_IOMMU)
            d = kv.ioctl(g, kv.VFIO_GROUP_GET_DEVICE_FD, name)
            os.close(d)
        finally:
            os.close(g)
            os.close(c)
    finally:
        kv.remove_mdev(u)


# -- the kick and the sleeping protocol ------------------------------------------------

def test_kick_value_becomes_sq_tail():
    """The kick is a pwrite of 4 bytes at offset 0 of the doorbell region: the
    value written is the new sq_tail, whatever the mapping held."""
    with kv.Queue("wd_dummy.0", "crc32c") as q:
        db_off = q.regions[kv.WD_REGION_DOORBELL][2]
        for i in range(4):
            kv.DESC.pack_into(q.sq, i * kv.DESC.size, tag=20 + i, opcode=kv.WD_OP_NOP)
        kv.store32(q.db, kv.DB_SQ_TAIL, 1)
        os.pwrite(q.dev, struct.pack("<I", 3), db_off)
        assert struct.unpack_from("<I", q.db, kv.DB_SQ_TAIL)[0] == 3
        q.sq_tail = 3
        assert [c.tag for c in q.reap(3)] == [20, 21, 22]
        # A value more than a ring ahead is ignored until a sane one is stored.
        os.pwrite(q.dev, struct.pack("<I", 3 + q.entries + 1), db_off)
        time.sleep(0.3)
        assert q.cq_tail() == 3
        os.pwrite(q.dev, struct.pack("<I", 4), db_off)
        q.sq_tail = 4
        assert q.reap(1)[0].tag == 23
        # Other doorbell offsets are registers, not kicks: unaligned or short fails.
        assert kv.errno_of(os.pwrite, q.dev, b"\0\0", db_off) == errno.EINVAL


def test_sleeping_protocol_never_loses_a_wake_up():
    """uapi 'Sleeping', step by step, many times against a live engine: every
    wait that sleeps is woken by its completion; a disarm with nothing racing
    leaves no signal behind."""
    n = int(os.environ.get("WD_SLEEP_ROUNDS", "400"))
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    stats = {"rounds": n, "slept": 0, "not_slept": 0, "stale_drained": 0}
    with kv.Queue("wd_dummy.1", "crc32c") as q:
        q.set_eventfd(efd)
        try:
            for i in range(n):
                q.submit([kv.desc(i)])
                try:
                    os.eventfd_read(efd)  # 1. drain
                    stats["stale_drained"] += 1
                except BlockingIOError:
                    pass
                kv.store32(q.db, kv.DB_IRQ_REQUEST, 1)  # 2. arm, barrier, re-check
                kv.full_barrier()
                if q.cq_tail() != q.cq_head:
                    kv.store32(q.db, kv.DB_IRQ_REQUEST, 0)  # 3. disarm
                    stats["not_slept"] += 1
                else:
                    assert select.select([efd], [], [], 20)[0], f"lost wake-up in round {i}"
                    stats["slept"] += 1
                assert q.reap(1, timeout=20)[0].tag == i
            # Disarmed with nothing in flight: no signal arrives.
            try:
                os.eventfd_read(efd)
            except BlockingIOError:
                pass
            kv.store32(q.db, kv.DB_IRQ_REQUEST, 1)
            kv.store32(q.db, kv.DB_IRQ_REQUEST, 0)
            assert q.run(kv.WD_OP_NOP, tag=7)[:2] == (7, 0)
            assert not select.select([efd], [], [], 0.3)[0]
        finally:
            os.close(efd)
    wd_measure.record("sleep_protocol", **stats)


# -- modules and sysfs -----------------------------------------------------------------

def test_rmmod_fails_with_eagain_while_a_queue_is_open():
    libc.syscall.restype = ctypes.c_long
    with kv.Queue("wd_dummy.1", "crc32c") as q:
        for mod in (b"wd_dummy", b"wrapdrive"):
            ret = libc.syscall(176, ctypes.c_char_p(mod), os.O_NONBLOCK)  # delete_module
            assert ret == -1 and ctypes.get_errno() == errno.EAGAIN, mod
        assert q.run(kv.WD_OP_NOP, tag=2)[:2] == (2, 0)


def _write_raw(path, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def test_priority_parsing_is_strict():
    p = f"{kv.MDEV_BUS}/wd_dummy.0/priority"
    try:
        for bad in (b"5\0junk", b"5\0", b"5 junk", b"5x", b" 5", b"\0"):
            assert kv.errno_of(_write_raw, p, bad) == errno.EINVAL, bad
            assert kv.read(p) == "10", bad
        assert _write_raw(p, b"7\n") == 2 and kv.read(p) == "7"
        assert _write_raw(p, b"-3") == 2 and kv.read(p) == "-3"
    finally:
        kv.write(p, "10")


TRACEFS = "/sys/kernel/tracing"


def _tracefs():
    if not os.path.exists(f"{TRACEFS}/kprobe_events"):
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], capture_output=True)
    if not os.path.exists(f"{TRACEFS}/kprobe_events"):
        pytest.skip("no kprobe events in this kernel")
    return TRACEFS


def test_capabilities_exist_before_the_registered_uevent():
    """Bind a device with kprobes on kernfs directory creation and on the
    device uevent callback (dev_uevent runs only for a uevent that is really
    sent, not for a suppressed one): every capabilities/ directory is
    created before the MDEV_STATE=registered uevent udev gets."""
    t = _tracefs()
    # dev_uevent(kobj, env): env->envp[3] (after ACTION, DEVPATH and
    # SUBSYSTEM) is the caller's first variable; struct kobj_uevent_env
    # starts with char *argv[3], char *envp[...].
    probes = ("p:wd/dir kernfs_create_dir_ns name=+0(%si):string\n"
              "p:wd/uev dev_uevent kname=+0(+0(%di)):string env3=+0(+48(%si)):string\n")
    kv.write(f"{t}/kprobe_events", probes)
    try:
        kv.write("/sys/bus/platform/drivers/wd_dummy/unbind", "wd_dummy.1")
        kv.write(f"{t}/trace", "")
        kv.write(f"{t}/events/wd/enable", "1")
        kv.write("/sys/bus/platform/drivers/wd_dummy/bind", "wd_dummy.1")
        kv.write(f"{t}/events/wd/enable", "0")
        trace = open(f"{t}/trace").read()
    finally:
        if not os.path.exists(f"{kv.MDEV_BUS}/wd_dummy.1"):
            kv.write("/sys/bus/platform/drivers/wd_dummy/bind", "wd_dummy.1")
        kv.write(f"{t}/events/wd/enable", "0")
        kv.write(f"{t}/kprobe_events", "")
    caps, sent = 0, None
    for line in trace.splitlines():
        if " dir: " in line and 'name="capabilities"' in line:
            caps += 1
        elif " uev: " in line and 'kname="wd_dummy.1"' in line and \
                'env3="MDEV_STATE=registered"' in line:
            sent = caps
            break
    assert sent is not None, trace[-3000:]
    ntypes = len(os.listdir(f"{kv.MDEV_BUS}/wd_dummy.1/mdev_supported_types"))
    assert sent == ntypes, f"{sent} of {ntypes} capabilities/ directories existed at the uevent"


def test_unbind_bind_and_reload_cycles():
    """Types, parents and queues come and go; under DEBUG_KOBJECT_RELEASE their
    memory must outlive the delayed kobject releases (KASAN watches)."""
    for _ in range(3):
        with kv.Queue("wd_dummy.0", "crc32c") as q:
            assert q.run(kv.WD_OP_NOP, tag=1)[:2] == (1, 0)
        kv.write("/sys/bus/platform/drivers/wd_dummy/unbind", "wd_dummy.0")
        kv.write("/sys/bus/platform/drivers/wd_dummy/bind", "wd_dummy.0")
    moddir = os.environ.get("WD_MODULE_DIR", "")
    for _ in range(2):
        kv.create_mdev("wd_dummy.1", "zlib")
        assert subprocess.run(["rmmod", "wd_dummy"]).returncode == 0
        assert subprocess.run(["insmod", f"{moddir}/wd_dummy.ko"]).returncode == 0
    assert kv.parents() == ["wd_dummy.0", "wd_dummy.1"]
