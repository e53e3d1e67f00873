"""Tiny VFIO/WrapDrive helper for the in-guest kernel tests (stdlib only).

Deliberately independent of the userlib: it talks to the kernel ABI
(kernel/uapi/wrapdrive.h) directly so the kernel can be tested on its own.
"""
import ctypes
import errno
import mmap
import os
import struct
import time
import uuid as uuidlib

libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
libc.ioctl.restype = ctypes.c_int

MDEV_BUS = "/sys/class/mdev_bus"
MDEV_DEVICES = "/sys/bus/mdev/devices"
DEBUGFS = "/sys/kernel/debug/wrapdrive"


def _io(nr):
    return (ord(";") << 8) | (100 + nr)


VFIO_GET_API_VERSION = _io(0)
VFIO_CHECK_EXTENSION = _io(1)
VFIO_SET_IOMMU = _io(2)
VFIO_GROUP_GET_STATUS = _io(3)
VFIO_GROUP_SET_CONTAINER = _io(4)
VFIO_GROUP_GET_DEVICE_FD = _io(6)
VFIO_DEVICE_GET_INFO = _io(7)
VFIO_DEVICE_GET_REGION_INFO = _io(8)
VFIO_DEVICE_GET_IRQ_INFO = _io(9)
VFIO_DEVICE_SET_IRQS = _io(10)
VFIO_DEVICE_RESET = _io(11)
VFIO_IOMMU_MAP_DMA = _io(13)
VFIO_IOMMU_UNMAP_DMA = _io(14)
VFIO_TYPE1v2_IOMMU = 3

VFIO_IRQ_SET_DATA_NONE = 1 << 0
VFIO_IRQ_SET_DATA_BOOL = 1 << 1
VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2
VFIO_IRQ_SET_ACTION_MASK = 1 << 3
VFIO_IRQ_SET_ACTION_UNMASK = 1 << 4
VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5

VFIO_REGION_INFO_FLAG_READ = 1
VFIO_REGION_INFO_FLAG_WRITE = 2
VFIO_REGION_INFO_FLAG_MMAP = 4
VFIO_IRQ_INFO_EVENTFD = 1
VFIO_IRQ_INFO_MASKABLE = 2

# kernel/uapi/wrapdrive.h
WD_RING_MAGIC = 0x51524457
WD_ABI_VERSION = 1
WD_CAPA_SHARE_ALL = 1
WD_WEAK_ORDER = 2
WD_REGION_DOORBELL = 0
WD_REGION_RING = 1
WD_OP_NOP, WD_OP_MEMCPY, WD_OP_CRC32C, WD_OP_SHA256, WD_OP_DEFLATE, WD_OP_INFLATE = range(6)
(WD_STS_OK, WD_STS_BAD_OPCODE, WD_STS_BAD_ADDR, WD_STS_BAD_LEN, WD_STS_NOSPC,
 WD_STS_BAD_DATA, WD_STS_BAD_FLAGS, WD_STS_ABORTED) = range(8)
WD_MAX_LEN = 16 << 20
WD_Q_ENGINE_IDLE = 1
WD_Q_DEAD = 2

DESC = struct.Struct("<IHHQQII")
CQE = struct.Struct("<IIII")
HDR = struct.Struct("<8I")


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


def crc32c(data, crc=0):
    """Reference CRC-32C (Castagnoli), as the crc32c Python package."""
    table = _crc_table()
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


_TABLE = []


def _crc_table():
    if not _TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _TABLE.append(c)
    return _TABLE


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


class Queue:
    """An opened queue: container, group and device fds, mapped regions."""

    def __init__(self, parent="wd_dummy.0", tname="crc32c", mdev=None):
        self.parent = parent
        self.own_mdev = mdev is None
        self.uuid = mdev or create_mdev(parent, tname)
        self.fds = []
        self.maps = []
        self.bufs = []
        self.container = self.group = self.dev = -1
        self.db = self.ring = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self):
        grp = os.path.basename(os.readlink(f"{MDEV_DEVICES}/{self.uuid}/iommu_group"))
        self.container = os.open("/dev/vfio/vfio", os.O_RDWR)
        self.group = os.open(f"/dev/vfio/{grp}", os.O_RDWR)
        fd = ctypes.c_int(self.container)
        ioctl(self.group, VFIO_GROUP_SET_CONTAINER, ctypes.pointer(fd))
        ioctl(self.container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)
        self.dev = ioctl(self.group, VFIO_GROUP_GET_DEVICE_FD,
                         ctypes.c_char_p(self.uuid.encode()))
        self.regions = [self.region_info(i) for i in range(2)]
        self.db = self.map_region(WD_REGION_DOORBELL)
        self.ring = self.map_region(WD_REGION_RING)
        (magic, ver, self.entries, dsz, csz, self.sq_off, self.cq_off,
         self.capa) = HDR.unpack_from(self.ring, 0)
        assert magic == WD_RING_MAGIC and ver == WD_ABI_VERSION
        assert dsz == DESC.size and csz == CQE.size
        self.sq_tail = 0
        self.cq_head = 0
        self.next_iova = 1 << 20

    # -- VFIO --
    def region_info(self, index, argsz=32):
        b = buf(struct.pack("<IIIIQQ", argsz, 0, index, 0, 0, 0))
        ioctl(self.dev, VFIO_DEVICE_GET_REGION_INFO, b)
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
        return ioctl(self.dev, VFIO_DEVICE_SET_IRQS, buf(raw))

    def set_eventfd(self, efd):
        return self.set_irqs(VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                             data=struct.pack("<i", efd))

    def dma_buffer(self, size, data=b"", read_only=False):
        """Anonymous memory mapped for the device; returns (mmap, iova, vaddr)."""
        length = max(mmap.PAGESIZE, (size + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1))
        m = mmap.mmap(-1, length)
        m[:len(data)] = data
        vaddr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        iova = self.next_iova
        self.next_iova += length + (1 << 20)
        flags = 1 if read_only else 3
        ioctl(self.container, VFIO_IOMMU_MAP_DMA,
              buf(struct.pack("<IIQQQ", 32, flags, vaddr, iova, length)))
        self.bufs.append((m, iova, length))
        return m, iova, vaddr

    def unmap_dma(self, iova, length):
        ioctl(self.container, VFIO_IOMMU_UNMAP_DMA,
              buf(struct.pack("<IIQQ", 24, 0, iova, length)))

    # -- ring --
    def status(self):
        return struct.unpack_from("<I", self.ring, 0xC0)[0]

    def cq_tail(self):
        return struct.unpack_from("<I", self.ring, 0x80)[0]

    def submit(self, descs, kick=True):
        mask = self.entries - 1
        for d in descs:
            DESC.pack_into(self.ring, self.sq_off + (self.sq_tail & mask) * DESC.size, *d)
            self.sq_tail = (self.sq_tail + 1) & 0xFFFFFFFF
        store32(self.db, 0, self.sq_tail)
        if kick and self.status() & WD_Q_ENGINE_IDLE:
            os.pwrite(self.dev, struct.pack("<I", self.sq_tail), self.regions[0][2])

    def reap(self, n, timeout=30.0):
        out = []
        mask = self.entries - 1
        end = time.monotonic() + timeout
        while len(out) < n:
            if self.cq_head != self.cq_tail():
                out.append(CQE.unpack_from(self.ring, self.cq_off + (self.cq_head & mask) * CQE.size))
                self.cq_head = (self.cq_head + 1) & 0xFFFFFFFF
                store32(self.db, 0x40, self.cq_head)
                continue
            if time.monotonic() > end:
                raise TimeoutError(f"{len(out)}/{n} completions")
            time.sleep(0.0005)
        return out

    def run(self, opcode, src=0, src_len=0, dst=0, dst_len=0, flags=0, tag=7):
        self.submit([(tag, opcode, flags, src, dst, src_len, dst_len)])
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


def errno_of(fn, *args, **kw):
    """Run fn, return the errno it raised (0 if none)."""
    try:
        fn(*args, **kw)
    except OSError as e:
        return e.errno
    return 0


__all__ = [n for n in dir() if not n.startswith("_")] + ["errno"]
