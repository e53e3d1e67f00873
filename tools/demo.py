"""The demo, run INSIDE a guest by `nox -s demo` (tools/build.py run ... -- python tools/demo.py):
lists the WrapDrive devices, then has the dummy engine hash, checksum and compress a file
through real queues with the `wrapdrive` CLI, checking each result against an independent
reference (sha256sum, the kernel's own crc32c through AF_ALG, zlib.decompress)."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path


def make_input(path: Path, size: int = 256 << 10) -> None:
    """Half text, half noise: compressible but not trivially so; the same every run."""
    rng = random.Random(2017)
    words = [b"wrapdrive", b"queue", b"mdev", b"vfio", b"accelerator", b"ring", b"doorbell"]
    buf = bytearray()
    while len(buf) < size:
        if rng.random() < 0.5:
            buf += b" ".join(rng.choice(words) for _ in range(16)) + b"\n"
        else:
            buf += rng.randbytes(64)
    path.write_bytes(bytes(buf[:size]))


def kernel_crc32c(data: bytes) -> int:
    """CRC-32C by the guest kernel's crypto API (AF_ALG), not by WrapDrive."""
    with socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET, 0) as alg:
        alg.bind(("hash", "crc32c"))
        op, _ = alg.accept()
        with op:
            for i in range(0, len(data), 1 << 16):
                op.send(data[i : i + (1 << 16)], socket.MSG_MORE)
            op.send(b"")
            return int.from_bytes(op.recv(4), "little")


def wrapdrive(*args: str) -> str:
    cmd = ["wrapdrive", *args]
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    print(proc.stdout, end="", flush=True)
    if proc.returncode:
        raise SystemExit(f"demo: `{' '.join(cmd)}` exited {proc.returncode}")
    return proc.stdout


def main() -> int:
    failures = 0
    with tempfile.TemporaryDirectory(prefix="wd-demo-") as tmp:
        f = Path(tmp) / "input.bin"
        make_input(f)
        data = f.read_bytes()
        print(f"demo input: {f} ({len(data)} bytes)\n")
        wrapdrive("list")

        got = wrapdrive("run", "-q", "sha256", str(f)).split()[0]
        want = subprocess.run(["sha256sum", str(f)], stdout=subprocess.PIPE, text=True, check=True).stdout.split()[0]
        ok = got == want
        failures += not ok
        print(f"sha256: wrapdrive {got}\n        sha256sum {want}  {'MATCH' if ok else 'MISMATCH'}\n")

        got_crc = int(wrapdrive("run", "-q", "crc32c", str(f)).split()[0], 16)
        want_crc = kernel_crc32c(data)
        ok = got_crc == want_crc
        failures += not ok
        print(f"crc32c: wrapdrive {got_crc:08x}, kernel AF_ALG {want_crc:08x}  {'MATCH' if ok else 'MISMATCH'}\n")

        wrapdrive("run", "-q", "zlib", str(f))
        z = Path(str(f) + ".z").read_bytes()
        ok = zlib.decompress(z) == data
        failures += not ok
        print(
            f"zlib: {len(data)} -> {len(z)} bytes ({100 * len(z) / len(data):.1f}%),"
            f" zlib.decompress gives the input back: {'YES' if ok else 'NO'}\n"
        )
    print("demo: all results match" if not failures else f"demo: {failures} result(s) WRONG")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
