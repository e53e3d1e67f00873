"""``Request``: one struct wd_req (libwd's request) seen from Python.

The struct lives in C memory owned by the object; the fields are the
struct's own, read and written through cffi.  ``src``/``dst``/``ctx`` are
process addresses of memory shared with the queue (``Queue.alloc``,
``wd_mem_share``).  The chaining fields of ABI v2 are there already
(``flags`` WD_DF_MORE/WD_DF_CONT, ``seed``, ``ctx``, ``stream``, ``level``,
``flush``), and so is the outcome (``status``, ``cqe_flags``, ``out_len``,
``result``).  The struct's ``user`` field holds a handle back to the
object, which is how wd_recv's pointer finds its Request.
"""

from __future__ import annotations

from typing import Any

from .abi import WD_STS_OK, ffi

#: struct wd_req.state values that mean "in flight" (libwd's enum wd_req_state).
_IN_FLIGHT = (1, 2)


class Request:
    """What to do (opcode, buffers, chaining) and, once done, the outcome."""

    __slots__ = ("_handle", "c", "context")

    def __init__(self, opcode: int, src: int = 0, src_len: int = 0, dst: int = 0,
                 dst_len: int = 0, context: Any = None, *, flags: int = 0, seed: int = 0,
                 ctx: int = 0, stream: int = 0, level: int = 0, flush: int = 0) -> None:
        c = ffi.new("struct wd_req *")
        c.opcode = opcode
        c.flags = flags
        c.src = ffi.cast("void *", src)
        c.src_len = src_len
        c.dst = ffi.cast("void *", dst)
        c.dst_len = dst_len
        c.seed = seed
        c.ctx = ffi.cast("void *", ctx)
        c.stream = stream
        c.level = level
        c.flush = flush
        self._handle = ffi.new_handle(self)
        c.user = self._handle
        self.c = c
        self.context = context

    @staticmethod
    def from_c(ptr: Any) -> Request:
        """The Request whose struct wd_req ``ptr`` is (from wd_recv)."""
        req: Request = ffi.from_handle(ptr.user)
        return req

    # -- what to do ---------------------------------------------------------------------
    @property
    def opcode(self) -> int:
        """WD_OP_*: what the device does."""
        return int(self.c.opcode)

    @property
    def src(self) -> int:
        """Process address of the input (0 with src_len 0)."""
        return int(ffi.cast("uintptr_t", self.c.src))

    @property
    def dst(self) -> int:
        """Process address of the output buffer."""
        return int(ffi.cast("uintptr_t", self.c.dst))

    @property
    def src_len(self) -> int:
        """Input length in bytes (at most WD_MAX_LEN)."""
        return int(self.c.src_len)

    @property
    def dst_len(self) -> int:
        """Room in the output buffer in bytes."""
        return int(self.c.dst_len)

    @property
    def flags(self) -> int:
        """WD_DF_* chaining flags (MORE, CONT)."""
        return int(self.c.flags)

    @property
    def seed(self) -> int:
        """crc32c: the CRC to continue from (0 to start)."""
        return int(self.c.seed)

    # -- the outcome ----------------------------------------------------------------------
    @property
    def tag(self) -> int:
        """The library's tag of the request on the ring."""
        return int(self.c.tag)

    @property
    def status(self) -> int:
        """WD_STS_*; -1 while in flight."""
        return -1 if self.c.state in _IN_FLIGHT else int(self.c.status)

    @property
    def cqe_flags(self) -> int:
        """WD_CF_* flags of the completion."""
        return int(self.c.cqe_flags)

    @property
    def out_len(self) -> int:
        """Bytes the device wrote to dst."""
        return int(self.c.out_len)

    @property
    def result(self) -> int:
        """crc32c: the CRC; zlib: input bytes consumed."""
        return int(self.c.result)

    @property
    def done(self) -> bool:
        """True once the request completed (any status)."""
        return self.status >= 0

    @property
    def ok(self) -> bool:
        """True when it completed with WD_STS_OK."""
        return self.status == WD_STS_OK

    def __repr__(self) -> str:
        return (f"Request(opcode={self.opcode}, src={self.src:#x}, src_len={self.src_len}, "
                f"dst={self.dst:#x}, dst_len={self.dst_len}, tag={self.tag}, "
                f"status={self.status}, out_len={self.out_len}, result={self.result:#x})")
