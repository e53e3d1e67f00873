"""AF_ALG: the kernel's own user-space crypto interface, as a comparison path.

AF_ALG is what an application would use without WrapDrive: one socket per
algorithm and at least two syscalls (send, recv) per request.  The
benchmark runs it side by side with a queue; nothing else in the library
depends on it.
"""

from __future__ import annotations

import socket
from types import TracebackType

#: digest sizes of the AF_ALG hash algorithms the benchmark compares.
DIGEST_SIZE = {"crc32c": 4, "sha256": 32}


class AfAlgUnavailable(OSError):
    """The running kernel has no AF_ALG support for the algorithm."""


class AfAlgHash:
    """One AF_ALG hash operation socket for ``algo`` ("crc32c", "sha256")."""

    def __init__(self, algo: str) -> None:
        if algo not in DIGEST_SIZE:
            raise ValueError(f"AF_ALG comparison not defined for {algo!r}; "
                             f"known: {', '.join(sorted(DIGEST_SIZE))}")
        self.algo = algo
        self.digest_size = DIGEST_SIZE[algo]
        try:
            self._tfm = socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET, 0)
            self._tfm.bind(("hash", algo))
        except OSError as exc:
            raise AfAlgUnavailable(exc.errno, f"AF_ALG hash {algo!r}: {exc.strerror} "
                                   "(kernel needs CONFIG_CRYPTO_USER_API_HASH "
                                   "and the algorithm)") from exc
        self._op, _ = self._tfm.accept()

    def digest(self, data: bytes | memoryview) -> bytes:
        """Hash ``data`` in one request: one send, one recv."""
        self._op.send(data)
        return self._op.recv(self.digest_size)

    def crc32c(self, data: bytes | memoryview) -> int:
        """crc32c of ``data`` as the usual integer (the kernel returns le32)."""
        return int.from_bytes(self.digest(data), "little")

    def close(self) -> None:
        self._op.close()
        self._tfm.close()

    def __enter__(self) -> AfAlgHash:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
