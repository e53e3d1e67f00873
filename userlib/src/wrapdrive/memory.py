"""Memory shared with a queue's device.

* ``Buffer``: page-aligned anonymous mmap memory with a known address.
* ``IovaAllocator``: hands out page-aligned IO virtual address ranges.
* ``SharedMemory``: one queue's table of shared ranges: wd_mem_share /
  wd_mem_unshare through VFIO_IOMMU_MAP_DMA / UNMAP_DMA, the address
  translation the ring uses (process address -> device address), and
  accounting.  On a WD_CAPA_SHARE_ALL queue the device works on process
  addresses directly: nothing is mapped, translation is the identity.
"""

from __future__ import annotations

import bisect
import ctypes
import mmap
from collections.abc import Callable
from dataclasses import dataclass

from .errors import BadRequestError, NotSharedError

PAGE_SIZE = mmap.PAGESIZE

#: where IOVAs are handed out: above the first MiB, below 2**39 (fits any
#: IOMMU's input address width; type1 with only emulated devices takes any).
IOVA_BASE = 1 << 20
IOVA_LIMIT = 1 << 39


def page_round_up(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def address_of(obj: object) -> int:
    """Process address of a writable buffer object (bytearray, mmap, ...).

    The object must stay alive and unresized while the device may use it."""
    c = ctypes.c_char.from_buffer(obj)  # type: ignore[arg-type]
    addr = ctypes.addressof(c)
    del c
    return addr


class Buffer:
    """Page-aligned memory from an anonymous shared mmap."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("buffer size must be positive")
        self.size = page_round_up(size)
        self._mm = mmap.mmap(-1, self.size, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS,
                             mmap.PROT_READ | mmap.PROT_WRITE)
        self.addr = address_of(self._mm)
        self.view = memoryview(self._mm)

    def write(self, data: bytes | bytearray | memoryview, offset: int = 0) -> int:
        n = len(data)
        self.view[offset:offset + n] = data
        return n

    def read(self, n: int, offset: int = 0) -> bytes:
        return bytes(self.view[offset:offset + n])

    @property
    def closed(self) -> bool:
        return self._mm.closed

    def close(self) -> None:
        if not self._mm.closed:
            self.view.release()
            self._mm.close()

    def __len__(self) -> int:
        return self.size


class IovaAllocator:
    """First-fit allocator of page-aligned IOVA ranges in [base, limit)."""

    def __init__(self, base: int = IOVA_BASE, limit: int = IOVA_LIMIT) -> None:
        self._free: list[tuple[int, int]] = [(base, limit)]  # sorted (start, end)

    def alloc(self, size: int) -> int:
        size = page_round_up(size)
        for i, (start, end) in enumerate(self._free):
            if end - start >= size:
                if end - start == size:
                    del self._free[i]
                else:
                    self._free[i] = (start + size, end)
                return start
        raise MemoryError(f"no IOVA space left for {size:#x} bytes")

    def free(self, iova: int, size: int) -> None:
        size = page_round_up(size)
        start, end = iova, iova + size
        i = bisect.bisect_left(self._free, (start, end))
        overlaps_prev = i > 0 and self._free[i - 1][1] > start
        overlaps_next = i < len(self._free) and self._free[i][0] < end
        if overlaps_prev or overlaps_next:
            raise ValueError(f"double free of IOVA {iova:#x}")
        if i < len(self._free) and self._free[i][0] == end:
            end = self._free[i][1]
            del self._free[i]
        if i > 0 and self._free[i - 1][1] == start:
            start = self._free[i - 1][0]
            del self._free[i - 1]
            i -= 1
        self._free.insert(i, (start, end))

    @property
    def free_ranges(self) -> list[tuple[int, int]]:
        return list(self._free)


@dataclass
class Share:
    vaddr: int  # page aligned
    size: int  # page multiple
    iova: int
    refs: int = 1


MapFn = Callable[[int, int, int], None]  # (vaddr, iova, size)
UnmapFn = Callable[[int, int], object]  # (iova, size)


class SharedMemory:
    """The ranges of process memory one queue's device may access."""

    def __init__(self, map_dma: MapFn | None, unmap_dma: UnmapFn | None,
                 share_all: bool = False, iova: IovaAllocator | None = None) -> None:
        self.share_all = share_all
        self._map = map_dma
        self._unmap = unmap_dma
        self._iova = iova or IovaAllocator()
        self._starts: list[int] = []
        self._shares: list[Share] = []
        self._last: Share | None = None
        self.bytes_shared = 0
        self.share_calls = 0
        self.unshare_calls = 0

    def __len__(self) -> int:
        return len(self._shares)

    @staticmethod
    def _span(addr: int, size: int) -> tuple[int, int]:
        if size <= 0:
            raise BadRequestError("size to share must be positive")
        if addr <= 0:
            raise BadRequestError("address to share must be a process address")
        start = addr & ~(PAGE_SIZE - 1)
        return start, page_round_up(addr + size) - start

    def share(self, addr: int, size: int) -> int:
        """Share [addr, addr+size); returns the device address of ``addr``."""
        self.share_calls += 1
        if self.share_all:
            return addr
        start, length = self._span(addr, size)
        i = bisect.bisect_right(self._starts, start) - 1
        if i >= 0:
            s = self._shares[i]
            if s.vaddr == start and s.size == length:
                s.refs += 1
                return s.iova + (addr - start)
        for j in (i, i + 1):
            if 0 <= j < len(self._shares):
                s = self._shares[j]
                if s.vaddr < start + length and start < s.vaddr + s.size:
                    raise BadRequestError(
                        f"range {addr:#x}+{size:#x} overlaps shared range "
                        f"{s.vaddr:#x}+{s.size:#x}; share whole buffers once")
        iova = self._iova.alloc(length)
        try:
            if self._map is not None:
                self._map(start, iova, length)
        except BaseException:
            self._iova.free(iova, length)
            raise
        s = Share(start, length, iova)
        k = bisect.bisect_left(self._starts, start)
        self._starts.insert(k, start)
        self._shares.insert(k, s)
        self.bytes_shared += length
        return iova + (addr - start)

    def unshare(self, addr: int, size: int) -> None:
        self.unshare_calls += 1
        if self.share_all:
            return
        start, length = self._span(addr, size)
        i = bisect.bisect_right(self._starts, start) - 1
        if i < 0 or self._shares[i].vaddr != start or self._shares[i].size != length:
            raise NotSharedError(f"{addr:#x}+{size:#x} was not shared with this queue")
        s = self._shares[i]
        s.refs -= 1
        if s.refs:
            return
        del self._starts[i]
        del self._shares[i]
        if self._last is s:
            self._last = None
        self.bytes_shared -= length
        if self._unmap is not None:
            self._unmap(s.iova, s.size)
        self._iova.free(s.iova, s.size)

    def translate(self, addr: int, length: int) -> int:
        """Device address of [addr, addr+length), which must be shared."""
        if self.share_all:
            return addr
        s = self._last
        if s is not None and s.vaddr <= addr and addr + length <= s.vaddr + s.size:
            return s.iova + (addr - s.vaddr)
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            s = self._shares[i]
            if addr + length <= s.vaddr + s.size:
                self._last = s
                return s.iova + (addr - s.vaddr)
        raise NotSharedError(
            f"buffer {addr:#x}+{length:#x} is not shared with the queue's device: "
            "call wd_mem_share() first or allocate it with queue.alloc()")

    def unshare_all(self, unmap: bool = True) -> None:
        for s in self._shares:
            if unmap and self._unmap is not None:
                self._unmap(s.iova, s.size)
            self._iova.free(s.iova, s.size)
        self._starts.clear()
        self._shares.clear()
        self._last = None
        self.bytes_shared = 0

    def stats(self) -> dict[str, int]:
        return {"ranges": len(self._shares), "bytes_shared": self.bytes_shared,
                "share_calls": self.share_calls, "unshare_calls": self.unshare_calls}
