"""Hashes of data of any size on the device, shaped like hashlib and zlib.

    h = wrapdrive.sha256(b"abc")          # hashlib's protocol
    h.update(more); h.hexdigest()
    hashlib.file_digest(f, wrapdrive.sha256)
    crc = wrapdrive.crc32c(data)          # zlib.crc32's: crc32c(b, crc32c(a))

Each call is one C call into libwd's streams, which cut the data into
device requests and keep the device busy with one piece while the next is
copied.  Without ``queue=`` the process's shared queue is used
(``wrapdrive.shared``).
"""

from __future__ import annotations

from typing import Any

from .abi import WD_SHA256_DIGEST_LEN, ffi, lib
from .chunks import Readable, as_bytes_view
from .errors import BadRequestError
from .queue import Queue
from .shared import shared_queue
from .stream_handle import StreamHandle, stream_error

#: hashlib's block_size for SHA-256 (the header's WD_SHA256_BLOCK_LEN).
SHA256_BLOCK_LEN: int = lib.WD_SHA256_BLOCK_LEN


class sha256:
    """SHA-256 on a WrapDrive queue, with hashlib's interface: ``update``,
    ``digest``, ``hexdigest``, ``copy``, ``name``, ``digest_size``,
    ``block_size``.  ``data`` is hashed at once; ``queue`` is a "sha256"
    Queue (default: the process's shared one).  ``usedforsecurity`` is
    accepted, as hashlib's constructors accept it, and ignored."""

    name = "sha256"
    digest_size = WD_SHA256_DIGEST_LEN
    block_size = SHA256_BLOCK_LEN

    def __init__(self, data: Any = b"", *, queue: Queue | None = None,
                 usedforsecurity: bool = True, _handle: StreamHandle | None = None) -> None:
        if _handle is not None:
            self._h = _handle
            return
        view = as_bytes_view(data)  # a bad argument fails before a queue is opened
        q = queue if queue is not None else shared_queue("sha256")
        self._h = StreamHandle(q, lib.wd_sha256_init)
        if len(view):
            self.update(view)

    def update(self, data: Any) -> None:
        """Hash ``data`` (any bytes-like object) after what came before."""
        view = as_bytes_view(data)
        h = self._h
        with h.lock:
            s = h.stream("sha256.update")
            h.check(lib.wd_sha256_update(s, ffi.from_buffer(view), len(view)),
                    "sha256.update")

    def update_from(self, f: Readable) -> int:
        """Read from the binary file ``f`` straight into the device's staging
        memory (no copy in between) and hash it: how many bytes, 0 at the end
        of the file.  Not in hashlib: what ``wrapdrive run`` reads files with."""
        h = self._h
        with h.lock:
            s = h.stream("sha256.update_from")
            buf, room = ffi.new("void **"), ffi.new("size_t *")
            h.check(lib.wd_sha256_space(s, buf, room), "sha256.update_from")
            n = f.readinto(memoryview(ffi.buffer(buf[0], room[0])))
            if not n:
                return 0
            h.check(lib.wd_sha256_filled(s, n), "sha256.update_from")
            return int(n)

    def digest(self) -> bytes:
        """The digest of everything so far (the object can go on)."""
        out = bytearray(WD_SHA256_DIGEST_LEN)
        h = self._h
        with h.lock:
            s = h.stream("sha256.digest")
            h.check(lib.wd_sha256_digest(s, ffi.from_buffer(out)), "sha256.digest")
        return bytes(out)

    def hexdigest(self) -> str:
        """``digest()`` as hexadecimal text."""
        return self.digest().hex()

    def copy(self) -> sha256:
        """An independent object with the same state, on the same queue."""
        h = self._h
        with h.lock:
            s = h.stream("sha256.copy")
            twin = StreamHandle(h.queue, lambda _q, t: lib.wd_stream_copy(t, s))
        return sha256(_handle=twin)

    def close(self) -> None:
        """Release the device resources now (staging buffers); later calls raise."""
        self._h.close()

    def __repr__(self) -> str:
        return f"<wrapdrive.sha256 on {self._h.queue.parent}/{self._h.queue.name}>"


def crc32c(data: Any, value: int = 0, *, queue: Queue | None = None) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from ``value`` (a
    previous result), as ``zlib.crc32(data, value)``: any size."""
    view = as_bytes_view(data)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"value {value} is not a 32-bit CRC")
    q = queue if queue is not None else shared_queue("crc32c")
    if q.algo_type != "crc32c":
        raise BadRequestError(f"crc32c needs a 'crc32c' queue, not {q.algo_type!r}")
    crc = ffi.new("uint32_t[1]", [value])
    ret = lib.wd_crc32c_update(q._usable(), crc, ffi.from_buffer(view), len(view))
    if ret:
        raise stream_error(ret, "crc32c")
    return int(crc[0])
