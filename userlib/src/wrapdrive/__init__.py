"""WrapDrive user-space library: accelerator queues over vfio-mdev.

    import wrapdrive
    with wrapdrive.request_queue("sha256") as q:
        digest = q.sha256(b"hello")

Data of any size, with the interfaces of hashlib and zlib (on a shared
per-process queue unless ``queue=`` names one):

    wrapdrive.sha256(data).hexdigest()
    hashlib.file_digest(f, wrapdrive.sha256)
    wrapdrive.crc32c(data, value)
    c = wrapdrive.compressobj(level=6); z = c.compress(data) + c.flush()
    d = wrapdrive.decompressobj(); data = d.decompress(z)

In a coroutine, without blocking the event loop:

    with await wrapdrive.request_queue_async("sha256") as q:
        digest = await q.sha256_async(b"hello")

The seed's C-style calls (wd_request_queue, wd_send, ...) are here too.
"""

from .abi import (
    WD_CAPA_SHARE_ALL,
    WD_MAX_LEN,
    WD_OP_CRC32C,
    WD_OP_DEFLATE,
    WD_OP_INFLATE,
    WD_OP_MEMCPY,
    WD_OP_NOP,
    WD_OP_SHA256,
    WD_WEAK_ORDER,
)
from .api import (
    devices,
    request_queue,
    request_queue_async,
    wd_mem_share,
    wd_mem_unshare,
    wd_recv,
    wd_recv_sync,
    wd_release_queue,
    wd_request_queue,
    wd_send,
    wd_send_sync,
)
from .errors import (
    BadRequestError,
    DevicePermissionError,
    NoDeviceError,
    NotSharedError,
    QueueDeadError,
    QueueEmptyError,
    QueueExhaustedError,
    QueueFullError,
    QueueReleasedError,
    RequestFailedError,
    RequestTooLargeError,
    VfioError,
    WrapDriveError,
)
from .hashing import crc32c, sha256
from .memory import Buffer, address_of
from .queue import Completion, Queue
from .request import Request
from .selection import Capa
from .stream_handle import StreamClosedError, StreamSlotsExhaustedError
from .zstream import Compress, Decompress, compressobj, decompressobj

__all__ = [
    "WD_CAPA_SHARE_ALL",
    "WD_MAX_LEN",
    "WD_OP_CRC32C",
    "WD_OP_DEFLATE",
    "WD_OP_INFLATE",
    "WD_OP_MEMCPY",
    "WD_OP_NOP",
    "WD_OP_SHA256",
    "WD_WEAK_ORDER",
    "BadRequestError",
    "Buffer",
    "Capa",
    "Completion",
    "Compress",
    "Decompress",
    "DevicePermissionError",
    "NoDeviceError",
    "NotSharedError",
    "Queue",
    "QueueDeadError",
    "QueueEmptyError",
    "QueueExhaustedError",
    "QueueFullError",
    "QueueReleasedError",
    "Request",
    "RequestFailedError",
    "RequestTooLargeError",
    "StreamClosedError",
    "StreamSlotsExhaustedError",
    "VfioError",
    "WrapDriveError",
    "address_of",
    "compressobj",
    "crc32c",
    "decompressobj",
    "devices",
    "request_queue",
    "request_queue_async",
    "sha256",
    "wd_mem_share",
    "wd_mem_unshare",
    "wd_recv",
    "wd_recv_sync",
    "wd_release_queue",
    "wd_request_queue",
    "wd_send",
    "wd_send_sync",
]
__version__ = "0.1.0"
