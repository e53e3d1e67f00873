"""Prepared batches: descriptors packed once, resubmitted at memcpy speed.

An application that repeats the same shape of work (hash these 64 buffers,
again and again, as a storage or network stack does with its fixed buffer
pool) need not pack the descriptors each time.  ``PreparedBatch`` keeps the
packed descriptors, tags included, for each ring slot the batch has started
at; submitting is then one slice copy into the SQ and one doorbell store, so
the Python cost of a batch hardly grows with its length.

The tag of each descriptor is its ring slot (``index & (entries - 1)``):
unique among requests in flight, since at most ``entries`` are, and fixed
for a slot, which is what lets the tags live in the template.  Completions
come back through ``Ring.recv_raw``.  A batch whose length divides the ring
size, submitted on its own, uses entries / n templates.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import uapi
from .ring import U32, Ring, desc_struct

_DESC_SIZE = uapi.DESC_STRUCT.size


class PreparedBatch:
    """``n`` descriptors of one opcode over fixed device addresses."""

    def __init__(self, opcode: int, srcs: Sequence[int], src_lens: Sequence[int],
                 dsts: Sequence[int] | None = None,
                 dst_lens: Sequence[int] | None = None) -> None:
        n = len(srcs)
        if not n or len(src_lens) != n:
            raise ValueError("a prepared batch needs one src_len per src, at least one")
        zeros = (0,) * n
        dsts = dsts or zeros
        dst_lens = dst_lens or zeros
        if len(dsts) != n or len(dst_lens) != n:
            raise ValueError("dsts and dst_lens must match srcs")
        for length in (*src_lens, *dst_lens):
            if not 0 <= length <= uapi.WD_MAX_LEN:
                raise ValueError(f"length {length} outside 0..WD_MAX_LEN")
        self.n = n
        tail = (0,) * (uapi.DESC_VALUES - 7)  # ctx, seed, stream, level, flush, reserved
        self._rows = [(opcode, 0, srcs[i], dsts[i], src_lens[i], dst_lens[i], *tail)
                      for i in range(n)]
        self._templates: dict[tuple[int, int], bytes] = {}  # (entries, slot) -> SQ bytes

    def template(self, entries: int, slot: int) -> bytes:
        """The batch packed as it is written at ``slot`` of an ``entries`` ring
        (tags are the slots it occupies, wrapping at the ring's end)."""
        key = (entries, slot)
        t = self._templates.get(key)
        if t is None:
            mask = entries - 1
            args: list[int] = []
            for i, row in enumerate(self._rows):
                args += ((slot + i) & mask, *row)
            t = self._templates[key] = desc_struct(self.n).pack(*args)
        return t

    def submit(self, ring: Ring) -> int:
        """Post the batch with one doorbell store; returns its first slot
        (the tag of its first descriptor).

        Raises BlockingIOError (EBUSY) when the ring has no room for all of
        it: a prepared batch is posted whole or not at all."""
        if ring.released or ring.dead:
            ring.check_usable()
        n = self.n
        tail = ring.sq_tail
        if ring.entries - ((tail - ring.cq_head) & U32) < n:
            raise BlockingIOError(16, f"no room for {n} descriptors")
        slot = tail & ring.mask
        t = self.template(ring.entries, slot)
        first = min(n, ring.entries - slot)
        ring.sq[slot * _DESC_SIZE:(slot + first) * _DESC_SIZE] = t[:first * _DESC_SIZE]
        if first < n:
            ring.sq[:(n - first) * _DESC_SIZE] = t[first * _DESC_SIZE:]
        ring._publish((tail + n) & U32)
        return slot
