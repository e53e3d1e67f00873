"""The ABI of kernel/uapi/wrapdrive.h, as the C compiler laid it out.

Every value here is read from the compiled cffi module (``_native``, built
from the header itself at install time): this module only gives the names
types for mypy and adds tables for messages.  ``ffi``/``lib`` are the
module's own objects: ``ffi.sizeof("struct wd_desc")``,
``ffi.offsetof("struct wd_ring_hdr", "cq_tail")``, ``lib.WD_OP_CRC32C``.
Code that needs the ABI without libwd (the in-guest kernel tests) can use
``wrapdrive._abi``, built from the header alone.
"""

from __future__ import annotations

from ._native import ffi, lib

WD_ABI_VERSION: int = lib.WD_ABI_VERSION
WD_RING_MAGIC: int = lib.WD_RING_MAGIC
WD_CAPA_SHARE_ALL: int = lib.WD_CAPA_SHARE_ALL
WD_WEAK_ORDER: int = lib.WD_WEAK_ORDER

WD_OP_NOP: int = lib.WD_OP_NOP
WD_OP_MEMCPY: int = lib.WD_OP_MEMCPY
WD_OP_CRC32C: int = lib.WD_OP_CRC32C
WD_OP_SHA256: int = lib.WD_OP_SHA256
WD_OP_DEFLATE: int = lib.WD_OP_DEFLATE
WD_OP_INFLATE: int = lib.WD_OP_INFLATE

WD_STS_OK: int = lib.WD_STS_OK
WD_STS_BAD_OPCODE: int = lib.WD_STS_BAD_OPCODE
WD_STS_BAD_ADDR: int = lib.WD_STS_BAD_ADDR
WD_STS_BAD_LEN: int = lib.WD_STS_BAD_LEN
WD_STS_NOSPC: int = lib.WD_STS_NOSPC
WD_STS_BAD_DATA: int = lib.WD_STS_BAD_DATA
WD_STS_BAD_FLAGS: int = lib.WD_STS_BAD_FLAGS
WD_STS_ABORTED: int = lib.WD_STS_ABORTED
WD_STS_BAD_CHAIN: int = lib.WD_STS_BAD_CHAIN
WD_STS_NOMEM: int = lib.WD_STS_NOMEM

WD_DF_MORE: int = lib.WD_DF_MORE
WD_DF_CONT: int = lib.WD_DF_CONT
WD_CF_STREAM_END: int = lib.WD_CF_STREAM_END
WD_CF_DST_FULL: int = lib.WD_CF_DST_FULL

WD_Q_ENGINE_IDLE: int = lib.WD_Q_ENGINE_IDLE
WD_Q_DEAD: int = lib.WD_Q_DEAD
WD_Q_RELEASE: int = lib.WD_Q_RELEASE

WD_MAX_LEN: int = lib.WD_MAX_LEN
WD_SHA256_DIGEST_LEN: int = lib.WD_SHA256_DIGEST_LEN


def deflate_bound(n: int) -> int:
    """Output room that always holds a one-shot deflate of ``n`` bytes (the header's)."""
    return int(lib.wd_deflate_bound(n))


#: names of the WD_STS_* codes, for messages.
STATUS_NAMES: dict[int, str] = {
    getattr(lib, name): name
    for name in ("WD_STS_OK", "WD_STS_BAD_OPCODE", "WD_STS_BAD_ADDR", "WD_STS_BAD_LEN",
                 "WD_STS_NOSPC", "WD_STS_BAD_DATA", "WD_STS_BAD_FLAGS", "WD_STS_ABORTED",
                 "WD_STS_BAD_CHAIN", "WD_STS_NOMEM")
}

__all__ = ["ffi", "lib"]  # and every name below

#: opcodes each algo_type accepts (besides WD_OP_NOP).
ALGO_OPCODES: dict[str, tuple[int, ...]] = {
    "memcpy": (WD_OP_MEMCPY,),
    "crc32c": (WD_OP_CRC32C,),
    "sha256": (WD_OP_SHA256,),
    "zlib": (WD_OP_DEFLATE, WD_OP_INFLATE),
}
