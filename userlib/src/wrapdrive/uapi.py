"""The one place that mirrors ``kernel/uapi/wrapdrive.h`` and the VFIO ABI.

Everything here must match the C headers byte for byte; ``tests/host/
test_uapi_mirror.py`` compiles a C program against the headers and compares
every constant, size and offset with this module.
"""

from __future__ import annotations

import ctypes
import struct

# --------------------------------------------------------------------------
# kernel/uapi/wrapdrive.h
# --------------------------------------------------------------------------
WD_ABI_VERSION = 2
WD_RING_MAGIC = 0x51524457

WD_CAPA_SHARE_ALL = 1 << 0
WD_WEAK_ORDER = 1 << 1

WD_REGION_DOORBELL = 0
WD_REGION_CQ = 1
WD_REGION_SQ = 2
WD_NUM_REGIONS = 3
WD_IRQ_QUEUE_STATE = 0
WD_NUM_IRQS = 1

WD_OP_NOP = 0
WD_OP_MEMCPY = 1
WD_OP_CRC32C = 2
WD_OP_SHA256 = 3
WD_OP_DEFLATE = 4
WD_OP_INFLATE = 5

WD_STS_OK = 0
WD_STS_BAD_OPCODE = 1
WD_STS_BAD_ADDR = 2
WD_STS_BAD_LEN = 3
WD_STS_NOSPC = 4
WD_STS_BAD_DATA = 5
WD_STS_BAD_FLAGS = 6
WD_STS_ABORTED = 7
WD_STS_BAD_CHAIN = 8
WD_STS_NOMEM = 9

WD_DF_MORE = 1 << 0
WD_DF_CONT = 1 << 1
WD_CF_STREAM_END = 1 << 0
WD_CF_DST_FULL = 1 << 1
WD_FLUSH_NONE = 0
WD_FLUSH_SYNC = 1
WD_FLUSH_FULL = 2
WD_LEVEL_DEFAULT = 0
WD_LEVEL_STORE = 10

WD_MAX_LEN = 16 << 20
WD_SHA256_DIGEST_LEN = 32
WD_SHA256_BLOCK_LEN = 64
WD_SHA256_CTX_MAGIC = 0x32414853

WD_Q_ENGINE_IDLE = 1 << 0
WD_Q_DEAD = 1 << 1
WD_Q_RELEASE = 1 << 2

#: names of the WD_STS_* codes, for messages.
STATUS_NAMES = {
    WD_STS_OK: "WD_STS_OK",
    WD_STS_BAD_OPCODE: "WD_STS_BAD_OPCODE",
    WD_STS_BAD_ADDR: "WD_STS_BAD_ADDR",
    WD_STS_BAD_LEN: "WD_STS_BAD_LEN",
    WD_STS_NOSPC: "WD_STS_NOSPC",
    WD_STS_BAD_DATA: "WD_STS_BAD_DATA",
    WD_STS_BAD_FLAGS: "WD_STS_BAD_FLAGS",
    WD_STS_ABORTED: "WD_STS_ABORTED",
    WD_STS_BAD_CHAIN: "WD_STS_BAD_CHAIN",
    WD_STS_NOMEM: "WD_STS_NOMEM",
}

#: opcodes each algo_type accepts (besides WD_OP_NOP).
ALGO_OPCODES = {
    "memcpy": (WD_OP_MEMCPY,),
    "crc32c": (WD_OP_CRC32C,),
    "sha256": (WD_OP_SHA256,),
    "zlib": (WD_OP_DEFLATE, WD_OP_INFLATE),
}


class WdDesc(ctypes.Structure):
    """struct wd_desc: one submission descriptor (64 bytes)."""

    _fields_ = [
        ("tag", ctypes.c_uint32),
        ("opcode", ctypes.c_uint16),
        ("flags", ctypes.c_uint16),
        ("src", ctypes.c_uint64),
        ("dst", ctypes.c_uint64),
        ("src_len", ctypes.c_uint32),
        ("dst_len", ctypes.c_uint32),
        ("ctx", ctypes.c_uint64),
        ("seed", ctypes.c_uint32),
        ("stream", ctypes.c_uint16),
        ("level", ctypes.c_uint8),
        ("flush", ctypes.c_uint8),
        ("__rsvd", ctypes.c_uint64 * 2),
    ]


class WdCqe(ctypes.Structure):
    """struct wd_cqe: one completion (16 bytes)."""

    _fields_ = [
        ("tag", ctypes.c_uint32),
        ("status", ctypes.c_uint16),
        ("flags", ctypes.c_uint16),
        ("out_len", ctypes.c_uint32),
        ("result", ctypes.c_uint32),
    ]


class WdSha256Ctx(ctypes.Structure):
    """struct wd_sha256_ctx: a chained sha256's state in user memory."""

    _fields_ = [
        ("magic", ctypes.c_uint32),
        ("__rsvd", ctypes.c_uint32),
        ("total", ctypes.c_uint64),
        ("h", ctypes.c_uint32 * 8),
        ("pending", ctypes.c_uint8 * WD_SHA256_BLOCK_LEN),
    ]


class WdDoorbell(ctypes.Structure):
    """struct wd_doorbell: the user-written page of WD_REGION_DOORBELL."""

    _fields_ = [
        ("sq_tail", ctypes.c_uint32),
        ("_pad0", ctypes.c_uint32 * 15),
        ("cq_head", ctypes.c_uint32),
        ("_pad1", ctypes.c_uint32 * 15),
        ("irq_request", ctypes.c_uint32),
        ("_pad2", ctypes.c_uint32 * 15),
    ]


class WdRingHdr(ctypes.Structure):
    """struct wd_ring_hdr: the device-written first page of WD_REGION_RING."""

    _fields_ = [
        ("magic", ctypes.c_uint32),
        ("version", ctypes.c_uint32),
        ("entries", ctypes.c_uint32),
        ("desc_size", ctypes.c_uint32),
        ("cqe_size", ctypes.c_uint32),
        ("cq_off", ctypes.c_uint32),
        ("capa_flags", ctypes.c_uint32),
        ("max_streams", ctypes.c_uint32),
        ("_pad0", ctypes.c_uint32 * 8),
        ("sq_head", ctypes.c_uint32),
        ("_pad1", ctypes.c_uint32 * 15),
        ("cq_tail", ctypes.c_uint32),
        ("_pad2", ctypes.c_uint32 * 15),
        ("status", ctypes.c_uint32),
        ("_pad3", ctypes.c_uint32 * 15),
    ]


#: struct.Struct formats with the same layout as the ctypes mirrors above
#: (the ring fast path packs with these; the mirror test checks the sizes).
DESC_FORMAT = "IHHQQIIQIHBBQQ"
CQE_FORMAT = "IHHII"
DESC_STRUCT = struct.Struct("<" + DESC_FORMAT)
CQE_STRUCT = struct.Struct("<" + CQE_FORMAT)

#: values per descriptor / completion in those formats, and log2 of their sizes.
DESC_VALUES = len(DESC_FORMAT)
CQE_VALUES = len(CQE_FORMAT)
DESC_SHIFT = DESC_STRUCT.size.bit_length() - 1
CQE_SHIFT = CQE_STRUCT.size.bit_length() - 1
#: positions of the completion fields within one unpacked completion.
CQE_STATUS, CQE_FLAGS, CQE_OUT_LEN, CQE_RESULT = 1, 2, 3, 4

#: u32 word indices of the index fields, for a memoryview cast to "I".
DB_SQ_TAIL_WORD = WdDoorbell.sq_tail.offset // 4
DB_CQ_HEAD_WORD = WdDoorbell.cq_head.offset // 4
DB_IRQ_REQUEST_WORD = WdDoorbell.irq_request.offset // 4
HDR_MAGIC_WORD = WdRingHdr.magic.offset // 4
HDR_SQ_HEAD_WORD = WdRingHdr.sq_head.offset // 4
HDR_CQ_TAIL_WORD = WdRingHdr.cq_tail.offset // 4
HDR_STATUS_WORD = WdRingHdr.status.offset // 4

# --------------------------------------------------------------------------
# linux/vfio.h (the part this library uses)
# --------------------------------------------------------------------------
VFIO_API_VERSION = 0
VFIO_TYPE1_IOMMU = 1
VFIO_TYPE1v2_IOMMU = 3
VFIO_TYPE = ord(";")
VFIO_BASE = 100


def _io(type_: int, nr: int) -> int:
    """_IO(type, nr) of asm-generic/ioctl.h (no direction, no size)."""
    return (type_ << 8) | nr


VFIO_GET_API_VERSION = _io(VFIO_TYPE, VFIO_BASE + 0)
VFIO_CHECK_EXTENSION = _io(VFIO_TYPE, VFIO_BASE + 1)
VFIO_SET_IOMMU = _io(VFIO_TYPE, VFIO_BASE + 2)
VFIO_GROUP_GET_STATUS = _io(VFIO_TYPE, VFIO_BASE + 3)
VFIO_GROUP_SET_CONTAINER = _io(VFIO_TYPE, VFIO_BASE + 4)
VFIO_GROUP_UNSET_CONTAINER = _io(VFIO_TYPE, VFIO_BASE + 5)
VFIO_GROUP_GET_DEVICE_FD = _io(VFIO_TYPE, VFIO_BASE + 6)
VFIO_DEVICE_GET_INFO = _io(VFIO_TYPE, VFIO_BASE + 7)
VFIO_DEVICE_GET_REGION_INFO = _io(VFIO_TYPE, VFIO_BASE + 8)
VFIO_DEVICE_GET_IRQ_INFO = _io(VFIO_TYPE, VFIO_BASE + 9)
VFIO_DEVICE_SET_IRQS = _io(VFIO_TYPE, VFIO_BASE + 10)
VFIO_DEVICE_RESET = _io(VFIO_TYPE, VFIO_BASE + 11)
VFIO_IOMMU_GET_INFO = _io(VFIO_TYPE, VFIO_BASE + 12)
VFIO_IOMMU_MAP_DMA = _io(VFIO_TYPE, VFIO_BASE + 13)
VFIO_IOMMU_UNMAP_DMA = _io(VFIO_TYPE, VFIO_BASE + 14)

VFIO_GROUP_FLAGS_VIABLE = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1
VFIO_REGION_INFO_FLAG_READ = 1 << 0
VFIO_REGION_INFO_FLAG_WRITE = 1 << 1
VFIO_REGION_INFO_FLAG_MMAP = 1 << 2
VFIO_IRQ_INFO_EVENTFD = 1 << 0
VFIO_IRQ_INFO_MASKABLE = 1 << 1
VFIO_IRQ_SET_DATA_NONE = 1 << 0
VFIO_IRQ_SET_DATA_BOOL = 1 << 1
VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2
VFIO_IRQ_SET_ACTION_MASK = 1 << 3
VFIO_IRQ_SET_ACTION_UNMASK = 1 << 4
VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5
VFIO_DMA_MAP_FLAG_READ = 1 << 0
VFIO_DMA_MAP_FLAG_WRITE = 1 << 1


class VfioGroupStatus(ctypes.Structure):
    _fields_ = [("argsz", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class VfioDeviceInfo(ctypes.Structure):
    """struct vfio_device_info up to num_irqs (the kernel's minsz)."""

    _fields_ = [
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("num_regions", ctypes.c_uint32),
        ("num_irqs", ctypes.c_uint32),
    ]


class VfioRegionInfo(ctypes.Structure):
    _fields_ = [
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("cap_offset", ctypes.c_uint32),
        ("size", ctypes.c_uint64),
        ("offset", ctypes.c_uint64),
    ]


class VfioIrqInfo(ctypes.Structure):
    _fields_ = [
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
    ]


class VfioIrqSet(ctypes.Structure):
    """struct vfio_irq_set header; the data (here one s32 eventfd) follows."""

    _fields_ = [
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("start", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
    ]


class VfioIrqSetEventfd(ctypes.Structure):
    """struct vfio_irq_set followed by one eventfd (count == 1)."""

    _fields_ = [
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("start", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
        ("fd", ctypes.c_int32),
    ]


class VfioIommuType1DmaMap(ctypes.Structure):
    _fields_ = [
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("vaddr", ctypes.c_uint64),
        ("iova", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
    ]


class VfioIommuType1DmaUnmap(ctypes.Structure):
    _fields_ = [
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("iova", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
    ]
