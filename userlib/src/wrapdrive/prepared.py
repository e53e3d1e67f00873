"""Prepared batches: descriptors packed once, resubmitted at memcpy speed.

An application that repeats the same shape of work (hash these 64 buffers,
again and again, as a storage or network stack does with its fixed buffer
pool) need not pack the descriptors each time.  ``PreparedBatch`` packs them
once into a template; submitting copies the template into the SQ slots (one
slice assignment) and stamps the tags with one strided store, so the Python
cost of a batch no longer grows with the number of descriptors: a batch of
64 costs about what a batch of 1 does.

Tags are the ring indices, as ``Ring.send_raw`` gives them; completions come
back through ``Ring.recv_raw``.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from . import uapi
from .ring import U32, Ring, desc_struct

_DESC_WORDS = uapi.DESC_STRUCT.size // 4  # u32 words per descriptor
_TAG_WORD = 0  # wd_desc.tag is the first word; uapi test pins the offset


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
        args: list[int] = []
        for i in range(n):
            args += (0, opcode, 0, srcs[i], dsts[i], src_lens[i], dst_lens[i])
        self.n = n
        self.template = desc_struct(n).pack(*args)

    def submit(self, ring: Ring) -> int:
        """Post the batch with one doorbell store; returns the first tag.

        Raises BlockingIOError (EBUSY) when the ring has no room for all of
        it: a prepared batch is posted whole or not at all."""
        if ring.released or ring.dead:
            ring.check_usable()
        n = self.n
        tail = ring.sq_tail
        if ring.entries - ((tail - ring.cq_head) & U32) < n:
            raise BlockingIOError(16, f"no room for {n} descriptors")
        slot = tail & ring.mask
        first = min(n, ring.entries - slot)
        self._stamp(ring, slot, 0, first, tail)
        if first < n:
            self._stamp(ring, 0, first, n - first, (tail + first) & U32)
        ring._publish((tail + n) & U32)
        return tail

    def _stamp(self, ring: Ring, slot: int, start: int, count: int, tag: int) -> None:
        size = uapi.DESC_STRUCT.size
        ring.sq[slot * size:(slot + count) * size] = \
            self.template[start * size:(start + count) * size]
        if tag + count <= U32 + 1:
            tags = array("I", range(tag, tag + count))
        else:  # the 32-bit index wraps inside this batch
            tags = array("I", ((tag + i) & U32 for i in range(count)))
        first_word = slot * _DESC_WORDS + _TAG_WORD
        ring.sq.cast("I")[first_word:first_word + count * _DESC_WORDS:_DESC_WORDS] = tags
