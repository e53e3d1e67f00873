"""In-guest helpers for the wd_edu tests (stdlib only): QEMU's edu device bound to
wd_edu.ko, its queues through the raw VFIO client (kernel_vfio.py), and the evidence that
nothing is left mapped or pinned: wd_edu's debugfs counters, the queue's and WrapDrive's
pinned_pages, and the DMA API debug entries where the kernel has CONFIG_DMA_API_DEBUG.

The edu tests run only in a guest booted with an edu machine profile (tools/machine.py);
anywhere else `need_edu` skips them."""
import glob
import os
import sys
import uuid as uuidlib

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402

DRIVER = "/sys/bus/pci/drivers/wd_edu"
MODULE = "wd_edu"
TYPE = "wd_edu-memcpy"
FILL = 4095  # bytes per fill of the device buffer (kernel/wd_edu.c EDU_BUF_FILL)
WINDOW = 64 * 1024  # bytes the driver maps at a time (WD_EDU_WINDOW)
DMA_S = 0.1  # QEMU's edu: one DMA takes 100 ms of QEMU's virtual clock
COUNTERS = ("dma_maps", "dmas", "irqs", "lost_irqs", "requests")
DMA_API = "/sys/kernel/debug/dma-api"


def devices():
    """PCI addresses of the edu devices wd_edu is bound to."""
    return sorted(os.path.basename(p) for p in glob.glob(f"{DRIVER}/0000:*"))


need_edu = pytest.mark.skipif(
    not devices(),
    reason=f"no edu device bound to wd_edu (machine {os.environ.get('WD_MACHINE', '?')}): "
    "these tests run in the edu machine profiles' boots",
)


def parent():
    return devices()[0]


def counters(dev):
    return {n: kv.dbg(dev, n) for n in COUNTERS}


def delta(before, after):
    return {n: after[n] - before[n] for n in COUNTERS}


def queue(dev, **kw):
    """A queue of the edu device's memcpy type, through the raw VFIO client; its mdev
    is removed when it is closed."""
    u = create_mdev(dev)
    try:
        q = kv.Queue(dev, "memcpy", mdev=u, **kw)
    except BaseException:
        kv.remove_mdev(u)
        raise
    q.own_mdev = True
    return q


def create_mdev(dev):
    u = str(uuidlib.uuid4())
    kv.write(f"{kv.MDEV_BUS}/{dev}/mdev_supported_types/{TYPE}/create", u)
    return u


def dma_api_entries(dev):
    """Live DMA API mappings of dev (CONFIG_DMA_API_DEBUG's dump), or None without it."""
    path = f"{DMA_API}/dump"
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return [ln for ln in f if dev in ln]


def dma_api_errors():
    path = f"{DMA_API}/error_count"
    return int(kv.read(path)) if os.path.exists(path) else None


def released(dev, q=None):
    """What is still held for dev (and q): [] when every DMA map is unmapped and every
    page unpinned."""
    left = []
    maps = kv.dbg(dev, "dma_maps")
    if maps:
        left.append(f"wd_edu dma_maps {maps}")
    if q is not None and q.dev >= 0:
        pinned = kv.dbg(dev, q.uuid, "pinned_pages")
        if pinned:
            left.append(f"queue pinned_pages {pinned}")
    entries = dma_api_entries(dev)
    if entries:
        left.append(f"{len(entries)} DMA API debug entries: {entries[:3]}")
    return left


def copy(q, n, src_off=0, dst_off=0, timeout=None, data=None):
    """One memcpy of n bytes through the device, src and dst at the given offsets into
    fresh DMA buffers (dst fenced by guard bytes).  Returns (cqe, data, dst bytes,
    guard intact)."""
    data = os.urandom(n) if data is None else data
    _, src, _ = q.dma_buffer(src_off + n, b"\0" * src_off + data)
    guard = b"\xa5" * 64
    dm, dst, _ = q.dma_buffer(dst_off + n + len(guard), b"\xa5" * (dst_off + n + len(guard)))
    q.submit([kv.desc(7, kv.WD_OP_MEMCPY, src + src_off, n, dst + dst_off, n)])
    cqe = q.reap(1, timeout=timeout or 30 + 4 * DMA_S * (2 * n // FILL + 4))[0]
    out = bytes(dm[dst_off:dst_off + n])
    intact = dm[:dst_off] == b"\xa5" * dst_off and dm[dst_off + n:dst_off + n + len(guard)] == guard
    return cqe, data, out, intact
