"""Tiny VFIO/WrapDrive helper for the in-guest kernel tests (stdlib only).

Deliberately independent of the userlib: it talks to the kernel ABI
(kernel/uapi/wrapdrive.h, compiled: see abi.py) directly so the kernel can be
tested on its own.
"""
import collections
import ctypes
import errno
import hashlib
import mmap
import os
import socket
import struct
import sys
import time
import uuid as uuidlib

sys.path.insert(0, os.path.dirname(__file__))

import abi  # noqa: E402  (compiled from kernel/uapi/wrapdrive.h and <linux/vfio.h>)

libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
libc.ioctl.restype = ctypes.c_int


def _barrier_fn():
    """A full memory barrier from Python: lock + unlock of a glibc spinlock."""
    lock, unlock, init = libc.pthread_spin_lock, libc.pthread_spin_unlock, libc.pthread_spin_init
    for fn in (lock, unlock):
        fn.argtypes = [ctypes.c_void_p]
    init.argtypes = [ctypes.c_void_p, ctypes.c_int]
    word = ctypes.c_int(1)
    init(ctypes.addressof(word), 0)

    def barrier():
        lock(ctypes.addressof(word))
        unlock(ctypes.addressof(word))
    barrier.word = word
    return barrier


full_barrier = _barrier_fn()


MDEV_BUS = "/sys/class/mdev_bus"
MDEV_DEVICES = "/sys/bus/mdev/devices"
DEBUGFS = "/sys/kernel/debug/wrapdrive"

# Every WD_* and VFIO_* constant, as the compiler sees the headers.
globals().update(abi.CONST)

DESC = abi.Layout("wd_desc")
CQE = abi.Layout("wd_cqe")
HDR = abi.Layout("wd_ring_hdr")
DB = abi.Layout("wd_doorbell")
SHA_CTX = abi.Layout("wd_sha256_ctx")
DB_SQ_TAIL = DB.fields["sq_tail"][0]
DB_CQ_HEAD = DB.fields["cq_head"][0]
DB_IRQ_REQUEST = DB.fields["irq_request"][0]
HDR_CQ_TAIL = HDR.fields["cq_tail"][0]
HDR_STATUS = HDR.fields["status"][0]


class Cqe(collections.namedtuple("Cqe", "tag status out_len result flags")):
    """A completion; indexable as (tag, status, out_len, result, flags)."""


def ioctl(fd, req, arg=None):
    """ioctl returning the int result; raises OSError on failure."""
    if arg is None:
        ret = libc.ioctl(fd, req, None)
    elif isinstance(arg, int):
        ret = libc.ioctl(fd, req, ctypes.c_void_p(arg))
    else:
        ret = libc.ioctl(fd, req, ctypes.cast(arg, ctypes.c_void_p))
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret


def buf(data):
    """A mutable ctypes buffer holding bytes."""
    return ctypes.create_string_buffer(bytes(data), len(data))


def store32(m, off, value):
    """One 32-bit store into shared memory.

    struct.pack_into is not usable for doorbells: CPython zeroes the field
    before writing its bytes, so the device can see a torn value.
    """
    ctypes.c_uint32.from_buffer(m, off).value = value


def hashlib_sha256(data):
    """SHA-256 by Python's hashlib: the reference for the engine's digests."""
    return hashlib.sha256(data).digest()


def kernel_crc32c(data, seed=0):
    """CRC-32C by the guest kernel's crypto API (AF_ALG, crc32c-generic or
    an arch driver), independent of WrapDrive; seed chains like
    zlib.crc32(data, value): the crypto API's key is the starting register,
    which for a chained CRC is the previous result inverted."""
    with socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET, 0) as alg:
        alg.bind(("hash", "crc32c"))
        alg.setsockopt(socket.SOL_ALG, socket.ALG_SET_KEY,
                       struct.pack("<I", seed ^ 0xFFFFFFFF))
        op, _ = alg.accept()
        with op:
            view = memoryview(data)
            for i in range(0, len(view), 1 << 16):
                op.send(view[i:i + (1 << 16)], socket.MSG_MORE)
            op.send(b"")
            return struct.unpack("<I", op.recv(4))[0]


def parents():
    return sorted(os.listdir(MDEV_BUS)) if os.path.isdir(MDEV_BUS) else []


def type_dir(parent, tname):
    return f"{MDEV_BUS}/{parent}/mdev_supported_types/wd_dummy-{tname}"


def read(path):
    with open(path) as f:
        return f.read().strip()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def create_mdev(parent, tname):
    u = str(uuidlib.uuid4())
    write(f"{type_dir(parent, tname)}/create", u)
    return u


def remove_mdev(u):
    if os.path.exists(f"{MDEV_DEVICES}/{u}"):
        write(f"{MDEV_DEVICES}/{u}/remove", "1")


def dbg(*parts):
    return int(read(os.path.join(DEBUGFS, *parts)))


def desc(tag=0, opcode=WD_OP_NOP, src=0, src_len=0, dst=0, dst_len=0, **extra):  # noqa: F821
    """A descriptor as a dict of struct wd_desc fields (the rest are 0)."""
    return dict(tag=tag, opcode=opcode, src=src, src_len=src_len, dst=dst, dst_len=dst_len,
                **extra)


class Queue:
    """An opened queue: container, group and device fds, mapped regions."""

    def __init__(self, parent="wd_dummy.0", tname="crc32c", mdev=None, container=None):
        """container: another Queue whose VFIO container this queue joins
        (its group is added to it; the IOMMU is already set)."""
        self.parent = parent
        self.own_mdev = mdev is None
        self.uuid = mdev or create_mdev(parent, tname)
        self.shares = container
        self.fds = []
        self.maps = []
        self.bufs = []
        self.container = self.group = self.dev = -1
        self.db = self.cqr = self.sq = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self):
        grp = os.path.basename(os.readlink(f"{MDEV_DEVICES}/{self.uuid}/iommu_group"))
        if self.shares is not None:
            self.container = os.dup(self.shares.container)
        else:
            self.container = os.open("/dev/vfio/vfio", os.O_RDWR)
        self.group = os.open(f"/dev/vfio/{grp}", os.O_RDWR)
        fd = ctypes.c_int(self.container)
        ioctl(self.group, VFIO_GROUP_SET_CONTAINER, ctypes.pointer(fd))  # noqa: F821
        if self.shares is None:
            ioctl(self.container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)  # noqa: F821
        self.dev = ioctl(self.group, VFIO_GROUP_GET_DEVICE_FD,  # noqa: F821
                         ctypes.c_char_p(self.uuid.encode()))
        self.regions = [self.region_info(i) for i in range(WD_NUM_REGIONS)]  # noqa: F821
        self.db = self.map_region(WD_REGION_DOORBELL)  # noqa: F821
        self.cqr = self.map_region(WD_REGION_CQ, prot=mmap.PROT_READ)  # noqa: F821
        self.sq = self.map_region(WD_REGION_SQ)  # noqa: F821
        hdr = HDR.unpack_from(self.cqr)
        assert hdr["magic"] == WD_RING_MAGIC and hdr["version"] == WD_ABI_VERSION  # noqa: F821
        assert hdr["desc_size"] == DESC.size and hdr["cqe_size"] == CQE.size
        self.entries = hdr["entries"]
        self.cq_off = hdr["cq_off"]
        self.capa = hdr["capa_flags"]
        self.max_streams = hdr["max_streams"]
        self.sq_tail = 0
        self.cq_head = 0
        # Queues sharing a container take IOVAs from disjoint windows.
        self.next_iova = (1 << 20) + (len(_container_users(self.shares)) << 36)

    # -- VFIO --
    def region_info(self, index, argsz=32):
        b = buf(struct.pack("<IIIIQQ", argsz, 0, index, 0, 0, 0))
        ioctl(self.dev, VFIO_DEVICE_GET_REGION_INFO, b)  # noqa: F821
        _, flags, _, _, size, offset = struct.unpack("<IIIIQQ", b.raw)
        return flags, size, offset

    def map_region(self, index, size=None, off=0, prot=mmap.PROT_READ | mmap.PROT_WRITE,
                   flags=mmap.MAP_SHARED):
        _, rsize, roff = self.regions[index]
        m = mmap.mmap(self.dev, size or rsize, flags=flags, prot=prot,
                      offset=roff + off)
        self.maps.append(m)
        return m

    def set_irqs(self, flags, index=0, start=0, count=1, data=b"", argsz=None):
        raw = struct.pack("<IIIII", argsz if argsz is not None else 20 + len(data),
                          flags, index, start, count) + data
        return ioctl(self.dev, VFIO_DEVICE_SET_IRQS, buf(raw))  # noqa: F821

    def set_eventfd(self, efd):
        return self.set_irqs(VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,  # noqa: F821
                             data=struct.pack("<i", efd))

    def dma_buffer(self, size, data=b"", read_only=False):
        """Anonymous memory mapped for the device; returns (mmap, iova, vaddr)."""
        length = max(mmap.PAGESIZE, (size + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1))
        m = mmap.mmap(-1, length)
        m[:len(data)] = data
        vaddr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        iova = self.next_iova
        self.next_iova += length + (1 << 20)
        flags = VFIO_DMA_MAP_FLAG_READ  # noqa: F821
        if not read_only:
            flags |= VFIO_DMA_MAP_FLAG_WRITE  # noqa: F821
        self.map_dma(vaddr, iova, length, flags)
        self.bufs.append((m, iova, length))
        return m, iova, vaddr

    def map_dma(self, vaddr, iova, length, flags=3):
        ioctl(self.container, VFIO_IOMMU_MAP_DMA,  # noqa: F821
              buf(struct.pack("<IIQQQ", 32, flags, vaddr, iova, length)))

    def unmap_dma(self, iova, length):
        ioctl(self.container, VFIO_IOMMU_UNMAP_DMA,  # noqa: F821
              buf(struct.pack("<IIQQ", 24, 0, iova, length)))

    # -- ring --
    def status(self):
        return struct.unpack_from("<I", self.cqr, HDR_STATUS)[0]

    def cq_tail(self):
        return struct.unpack_from("<I", self.cqr, HDR_CQ_TAIL)[0]

    def kick(self):
        os.pwrite(self.dev, struct.pack("<I", self.sq_tail), self.regions[WD_REGION_DOORBELL][2])  # noqa: F821,E501

    def submit(self, descs, kick=True):
        """Post descriptors (dicts of wd_desc fields, see desc()), one doorbell store."""
        mask = self.entries - 1
        for d in descs:
            DESC.pack_into(self.sq, (self.sq_tail & mask) * DESC.size, **d)
            self.sq_tail = (self.sq_tail + 1) & 0xFFFFFFFF
        store32(self.db, DB_SQ_TAIL, self.sq_tail)
        if kick and self.status() & WD_Q_ENGINE_IDLE:  # noqa: F821
            self.kick()

    def reap(self, n, timeout=30.0):
        out = []
        mask = self.entries - 1
        end = time.monotonic() + timeout
        while len(out) < n:
            if self.cq_head != self.cq_tail():
                c = CQE.unpack_from(self.cqr, self.cq_off + (self.cq_head & mask) * CQE.size)
                out.append(Cqe(c["tag"], c["status"], c["out_len"], c["result"], c["flags"]))
                self.cq_head = (self.cq_head + 1) & 0xFFFFFFFF
                store32(self.db, DB_CQ_HEAD, self.cq_head)
                continue
            if time.monotonic() > end:
                raise TimeoutError(f"{len(out)}/{n} completions")
            time.sleep(0.0005)
        return out

    def run(self, opcode, src=0, src_len=0, dst=0, dst_len=0, tag=7, **extra):
        self.submit([desc(tag, opcode, src, src_len, dst, dst_len, **extra)])
        return self.reap(1)[0]

    def close(self):
        for m in self.maps:
            try:
                m.close()
            except (ValueError, BufferError):
                pass
        self.maps = []
        for fd in (self.dev, self.group, self.container):
            if fd >= 0:
                os.close(fd)
        self.dev = self.group = self.container = -1
        for m, _, _ in self.bufs:
            try:
                m.close()
            except BufferError:
                pass
        self.bufs = []
        if self.own_mdev:
            remove_mdev(self.uuid)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _container_users(q):
    """Queues that share q's container, q first (empty for None)."""
    out = []
    while q is not None:
        out.append(q)
        q = q.shares
    return out


def errno_of(fn, *args, **kw):
    """Run fn, return the errno it raised (0 if none)."""
    try:
        fn(*args, **kw)
    except OSError as e:
        return e.errno
    return 0


KMEMLEAK = "/sys/kernel/debug/kmemleak"


def kmemleak_of_ours():
    """Objects kmemleak reports with WrapDrive in their backtrace ([] on a kernel
    without kmemleak)."""
    if not os.path.exists(KMEMLEAK):
        return []
    write(KMEMLEAK, "scan")
    write(KMEMLEAK, "scan")  # a second scan confirms what the first suspected
    report = read(KMEMLEAK)
    return [blk for blk in report.split("unreferenced object")
            if "[wrapdrive]" in blk or "[wd_dummy]" in blk]


# -- wd_dummy's own knobs and counters ------------------------------------------
DUMMY_DEBUGFS = DEBUGFS  # the sample adds its files to its accelerator's directory
DUMMY_PARAMS = "/sys/module/wd_dummy/parameters"


def dummy_dbg(parent, name):
    """A wd_dummy debugfs counter of a device (engines, streams, stream_bytes)."""
    return int(read(f"{DUMMY_DEBUGFS}/{parent}/{name}"))


def param(name):
    return read(f"{DUMMY_PARAMS}/{name}")


def set_param(name, value):
    write(f"{DUMMY_PARAMS}/{name}", str(value))


class Param:
    """with Param("poll_idle_us", 0): a wd_dummy tunable set for a while."""

    def __init__(self, name, value):
        self.name, self.value = name, value

    def __enter__(self):
        self.saved = param(self.name)
        set_param(self.name, self.value)
        return self

    def __exit__(self, *exc):
        set_param(self.name, self.saved)


def engine_pids(parent):
    """PIDs of the engine threads of a wd_dummy device ("wd_dummy/N" and
    "wd_dummy/N.M")."""
    idx = parent.rsplit(".", 1)[1]
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            comm = read(f"/proc/{pid}/comm")
        except OSError:
            continue
        if comm == f"wd_dummy/{idx}" or comm.startswith(f"wd_dummy/{idx}."):
            out.append(int(pid))
    return sorted(out)


def context_switches(pid):
    """Voluntary + involuntary context switches of a task so far."""
    total = 0
    for line in read(f"/proc/{pid}/status").splitlines():
        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
            total += int(line.split()[1])
    return total


def kernel_has_debug_vm():
    """CONFIG_DEBUG_VM: mm/debug.c builds dump_mm() only then."""
    with open("/proc/kallsyms") as f:
        return any(line.rstrip().endswith(" dump_mm") for line in f)


class Userfault:
    """Anonymous memory registered with a userfaultfd that nobody serves:
    any access to it, by this process or by the kernel on its behalf, waits
    until the userfaultfd is closed.  Never touch .addr from Python."""

    def __init__(self, size=mmap.PAGESIZE):
        fd = libc.syscall(ctypes.c_long(SYS_userfaultfd),  # noqa: F821
                          ctypes.c_long(os.O_CLOEXEC | os.O_NONBLOCK))
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        self.fd = fd
        self.size = size
        self.map = None
        try:
            ioctl(fd, UFFDIO_API, buf(struct.pack("<QQQ", UFFD_API, 0, 0)))  # noqa: F821
            self.map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            view = ctypes.c_char.from_buffer(self.map)
            self.addr = ctypes.addressof(view)
            del view
            reg = struct.pack("<QQQQ", self.addr, size, UFFDIO_REGISTER_MODE_MISSING, 0)  # noqa: F821
            ioctl(fd, UFFDIO_REGISTER, buf(reg))  # noqa: F821
        except BaseException:
            self.close()
            raise

    def close(self):
        """Closing the userfaultfd lets every waiting access through."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.map is not None:
            self.map.close()
            self.map = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = [n for n in dir() if not n.startswith("_")] + ["errno"]
