"""Memory a queue's device can be given.

``Buffer`` is page-aligned anonymous mmap memory with a known address;
``Queue.alloc`` shares one with the device (libwd's wd_mem_share: the
IOVA table, VFIO_IOMMU_MAP_DMA and translation live in C).
"""

from __future__ import annotations

import ctypes
import mmap

PAGE_SIZE = mmap.PAGESIZE


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
        """Copy ``data`` into the buffer at ``offset``; returns its length."""
        n = len(data)
        self.view[offset:offset + n] = data
        return n

    def read(self, n: int, offset: int = 0) -> bytes:
        """A copy of ``n`` bytes of the buffer from ``offset``."""
        return bytes(self.view[offset:offset + n])

    @property
    def closed(self) -> bool:
        """True once the buffer was closed (its memory unmapped)."""
        return self._mm.closed

    def close(self) -> None:
        """Unmap the memory (idempotent); unshare it first if a queue uses it."""
        if not self._mm.closed:
            self.view.release()
            self._mm.close()

    def __len__(self) -> int:
        return self.size
