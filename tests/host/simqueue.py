"""A simulated device for host tests: a queue's three regions (doorbell, CQ
region with the ring header, SQ) in plain memory, attached to a struct
wd_queue with libwd's wd_attach_memory, so libwd's ring runs for real and
the test plays the device.  Not part of the wrapdrive package."""

from __future__ import annotations

import os
from typing import Any

from wrapdrive import abi
from wrapdrive.abi import ffi, lib


class SimQueue:
    """The three regions in plain memory, attached to a struct wd_queue."""

    ENTRIES = 8

    def __init__(self) -> None:
        n = self.ENTRIES
        self.db = ffi.new("struct wd_doorbell *")
        self.cq_region = ffi.new("char[]", 4096 + n * ffi.sizeof("struct wd_cqe"))
        self.sq_region = ffi.new("struct wd_desc[]", n)
        self.hdr = ffi.cast("struct wd_ring_hdr *", self.cq_region)
        self.cq = ffi.cast("struct wd_cqe *", self.cq_region + 4096)
        h = self.hdr
        h.magic, h.version, h.entries = abi.WD_RING_MAGIC, abi.WD_ABI_VERSION, n
        h.desc_size, h.cqe_size = ffi.sizeof("struct wd_desc"), ffi.sizeof("struct wd_cqe")
        h.cq_off = 4096
        self.efd = os.eventfd(0, os.EFD_NONBLOCK)
        self.kick = os.memfd_create("kick")
        self.q: Any = ffi.new("struct wd_queue *")
        ret = lib.wd_attach_memory(self.q, self.db, self.cq_region, len(self.cq_region),
                                   self.sq_region, ffi.sizeof(self.sq_region), self.kick,
                                   self.efd)
        assert ret == 0, ffi.string(lib.wd_errmsg())

    def pending(self) -> bool:
        """True while a submitted descriptor waits for the device."""
        return bool(self.hdr.sq_head != self.db.sq_tail)

    def complete_all(self, result: int) -> int:
        """The device: take every submitted descriptor, complete it with
        ``result + seed``; one with an output buffer gets its input copied
        there (what memcpy does, whatever the opcode: a simulation, not an
        engine).  The queue is WD_CAPA_SHARE_ALL, so addresses are the
        process's own."""
        n = 0
        while self.pending():
            d = self.sq_region[self.hdr.sq_head % self.ENTRIES]
            c = self.cq[self.hdr.cq_tail % self.ENTRIES]
            out_len = d.src_len
            if d.dst:
                out_len = min(d.src_len, d.dst_len)
                ffi.memmove(ffi.cast("void *", d.dst), ffi.cast("void *", d.src), out_len)
            c.tag, c.status, c.out_len, c.result = d.tag, 0, out_len, result + d.seed
            self.hdr.sq_head += 1
            self.hdr.cq_tail += 1
            n += 1
        if n and self.db.irq_request:
            os.eventfd_write(self.efd, 1)  # the sleeping protocol: wake the waiter
        return n

    def close(self) -> None:
        lib.wd_release_queue(self.q)
        os.close(self.efd)
        os.close(self.kick)
