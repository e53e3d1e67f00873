"""The seed's user interface, call for call, plus the Pythonic entry points.

Seed (C)                                   Python
int  wd_request_queue(q, capa)             q = wd_request_queue(capa)
void wd_release_queue(q)                   wd_release_queue(q)
int  wd_send(q, req)                       wd_send(q, req) -> 0 | QueueFullError (EBUSY)
int  wd_recv(q, &req)                      req = wd_recv(q) | QueueEmptyError (EAGAIN)
int  wd_send_sync(q, req)                  wd_send_sync(q, req) -> 0
int  wd_recv_sync(q, &req)                 req = wd_recv_sync(q)
int  wd_mem_share(q, addr, size, flags)    wd_mem_share(q, addr, size, flags) -> 0
void wd_mem_unshare(q, addr, size)         wd_mem_unshare(q, addr, size)

QueueFullError/QueueEmptyError are BlockingIOError subclasses carrying the
errno; neither call ever waits.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from . import sysfs
from .abi import WD_CAPA_SHARE_ALL, WD_WEAK_ORDER
from .errors import QueueEmptyError, QueueFullError
from .queue import Queue
from .request import Request
from .selection import Capa


def _capa(capa: Capa | str, flags: int = 0) -> Capa:
    if isinstance(capa, Capa):
        return Capa(capa.algo_type, capa.flags | flags)
    return Capa(capa, flags)


def wd_request_queue(capa: Capa | str, flags: int = 0, *, root: Path = sysfs.SYSFS,
                     uuid: str | None = None) -> Queue:
    """A queue for ``capa`` (a Capa, or an algo_type with ``flags``): the
    existing queue ``uuid``; else a free provisioned queue the caller may
    open; else a new one on the best device (priority, then NUMA distance,
    then free queues)."""
    return Queue(_capa(capa, flags), root, uuid)


def wd_release_queue(q: Queue) -> None:
    """Release ``q``: drain (bounded), unshare, unmap, close, remove the mdev
    it created (a provisioned queue stays)."""
    q.close()


def wd_send(q: Queue, req: Request) -> int:
    """Post ``req``; raises QueueFullError (EBUSY) at once if the ring is full."""
    if not q.send(req):
        raise QueueFullError()
    return 0


def wd_recv(q: Queue) -> Request:
    """A completed request; raises QueueEmptyError (EAGAIN) at once if none."""
    req = q.recv()
    if req is None:
        raise QueueEmptyError()
    return req


def wd_send_sync(q: Queue, req: Request) -> int:
    """Post ``req``; spins, then sleeps while the ring is full."""
    q.send_sync(req)
    return 0


def wd_recv_sync(q: Queue, timeout: float | None = None) -> Request:
    """The next completed request; spins, then sleeps on the queue's eventfd."""
    return q.recv_sync(timeout)


def wd_mem_share(q: Queue, addr: int, size: int, flags: int = 0) -> int:
    """Let the device access [addr, addr+size) (VFIO_IOMMU_MAP_DMA; nothing to
    do on a WD_CAPA_SHARE_ALL queue).  No flags are defined: pass 0."""
    q.share(addr, size, flags)
    return 0


def wd_mem_unshare(q: Queue, addr: int, size: int) -> None:
    """Stop sharing [addr, addr+size) (VFIO_IOMMU_UNMAP_DMA); NotSharedError if
    that range was not shared as a whole."""
    q.unshare(addr, size)


def request_queue(algo_type: str, flags: int = 0, *, weak_order: bool = False,
                  share_all: bool = False, root: Path = sysfs.SYSFS,
                  uuid: str | None = None) -> Queue:
    """``with wrapdrive.request_queue("sha256") as q: q.sha256(b"...")``

    ``algo_type`` is case-sensitive ("sha256", "crc32c", "zlib", "memcpy"
    for the sample driver).  With ``uuid``, open that existing queue (one an
    administrator provisioned, e.g. with ``mdevctl``); its type must offer
    ``algo_type``.  Without, a free provisioned queue the caller may open is
    preferred over creating one.  A queue the library did not create is left
    in place by ``close()`` (``q.provisioned``)."""
    if weak_order:
        flags |= WD_WEAK_ORDER
    if share_all:
        flags |= WD_CAPA_SHARE_ALL
    return Queue(Capa(algo_type, flags), root, uuid)


async def request_queue_async(algo_type: str, flags: int = 0, *, weak_order: bool = False,
                              share_all: bool = False, root: Path = sysfs.SYSFS,
                              uuid: str | None = None) -> Queue:
    """``with await wrapdrive.request_queue_async("sha256") as q:`` in a coroutine

    request_queue() in a worker thread (opening a queue scans sysfs, may
    create an mdev and wait for udev), so the event loop runs meanwhile;
    the arguments are request_queue's.  If the awaiting task is cancelled,
    a queue opened after all is closed rather than left to the garbage
    collector."""
    opening = asyncio.ensure_future(asyncio.to_thread(
        request_queue, algo_type, flags, weak_order=weak_order, share_all=share_all,
        root=root, uuid=uuid))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_unwanted)
        raise


def _close_unwanted(opening: asyncio.Future[Queue]) -> None:
    """The queue a cancelled request_queue_async opened anyway, released."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def devices(root: Path = sysfs.SYSFS) -> list[sysfs.Device]:
    """Every WrapDrive device and its mdev types."""
    return sysfs.scan(root)
