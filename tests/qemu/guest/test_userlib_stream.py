"""In-guest: data of any size through the userlib's streaming objects
(wrapdrive.sha256, crc32c, compressobj, decompressobj) on the real modules.

Random data cut at random places and at the places that matter (0, 1, the
SHA-256 block boundaries +-1, libwd's piece size +-1, WD_MAX_LEN +-1) gives
byte-identical results to hashlib, zlib and the kernel's own crc32c
(AF_ALG); bad chains are answered with a status; a process killed in the
middle of a stream leaves no stream behind (debugfs); a forked child gets
its own shared queue."""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    import wrapdrive
except ImportError:  # run from the repo root without an install
    sys.path.insert(0, os.path.join(os.getcwd(), "userlib", "src"))
    import wrapdrive

from wrapdrive import abi
from wrapdrive._native import lib
from wrapdrive.shared import close_shared

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402

MAX = abi.WD_MAX_LEN
#: the largest input of the "any split" tests (issue 13: 0 B to 64 MiB)
LARGEST = 64 << 20
PIECE = int(lib.WD_STREAM_PIECE)
BLOCK = 64
DEVICES = ("wd_dummy.0", "wd_dummy.1")
MDEV_DEVICES = "/sys/bus/mdev/devices"

_BLOB: dict[str, bytes] = {}


def blob(n: int) -> bytes:
    """n random bytes: prefixes of one blob, made once."""
    if "b" not in _BLOB or len(_BLOB["b"]) < n:
        _BLOB["b"] = random.Random(1).randbytes(max(n, 40 << 20))
    return _BLOB["b"][:n]


def compressible(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < n:
        out += rng.randbytes(rng.randrange(1, 200)) if rng.random() < 0.3 else \
            bytes([rng.randrange(97, 123)]) * rng.randrange(1, 400)
    return bytes(out[:n])


def cuts(size: int, rng: random.Random) -> list[int]:
    """Split points: some of the special ones, some random."""
    special = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, PIECE - 1, PIECE, PIECE + 1,
               MAX - 1, MAX, MAX + 1, size - 1, size]
    pts = {c for c in special if 0 <= c <= size and rng.random() < 0.5}
    pts |= {rng.randrange(size + 1) for _ in range(rng.randrange(4))}
    return sorted(pts)


def split(data: bytes, points: list[int]) -> list[memoryview]:
    view = memoryview(data)
    bounds = [0, *points, len(data)]
    return [view[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def streams_in_driver() -> int:
    return sum(kv.dummy_dbg(d, "streams") for d in DEVICES)


def our_mdevs() -> set[str]:
    return {n for n in os.listdir(MDEV_DEVICES) if n.startswith("57447276-")}


@pytest.fixture(autouse=True)
def shared_queues_closed() -> Iterator[None]:
    """Each test ends with the shared queues released and nothing left."""
    before = our_mdevs()
    yield
    close_shared()
    assert our_mdevs() == before, "a test leaked a queue (mdev left behind)"
    assert streams_in_driver() == 0


# -- sha256 ---------------------------------------------------------------------------
SHA_SIZES = [0, 1, 63, 64, 65, PIECE - 1, PIECE + 1, MAX - 1, MAX + 1, 2 * MAX + 3, LARGEST]


@pytest.mark.slow(240)
def test_sha256_any_split_gives_hashlibs_digest() -> None:
    rng = random.Random(2)
    for size in SHA_SIZES:
        data = blob(size)
        want = hashlib.sha256(data).digest()
        for _ in range(3 if size <= PIECE + 1 else 1):
            pts = cuts(size, rng)
            h = wrapdrive.sha256()
            for p in split(data, pts):
                h.update(p)
            assert h.digest() == want, (size, pts)


def test_sha256_speaks_hashlibs_protocol() -> None:
    data = blob(3 * PIECE + 5)
    h = wrapdrive.sha256(data[:1000])
    assert (h.name, h.digest_size, h.block_size) == ("sha256", 32, 64)
    ref = hashlib.sha256(data[:1000])
    assert h.hexdigest() == ref.hexdigest()
    twin = h.copy()
    h.update(data[1000:])  # a digest does not end the stream; the copy is apart
    ref2 = ref.copy()
    ref2.update(data[1000:])
    assert h.digest() == ref2.digest() == hashlib.sha256(data).digest()
    assert twin.digest() == ref.digest()
    twin.update(b"abc")
    assert twin.hexdigest() == hashlib.sha256(data[:1000] + b"abc").hexdigest()
    # any buffer, as hashlib takes
    import array
    arr = array.array("I", range(1000))
    assert wrapdrive.sha256(arr).digest() == hashlib.sha256(arr).digest()
    with pytest.raises(TypeError):
        wrapdrive.sha256("text")  # type: ignore[arg-type]
    # hashlib.file_digest, from a real file and from a BytesIO
    f = io.BytesIO(data)
    assert hashlib.file_digest(f, wrapdrive.sha256).digest() == hashlib.sha256(data).digest()
    h.close()
    with pytest.raises(wrapdrive.StreamClosedError):
        h.update(b"x")


def test_sha256_reads_files_into_staging_memory(tmp_path: Path) -> None:
    data = blob(2 * PIECE + 99)
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    h = wrapdrive.sha256(b"head")
    total = 0
    with open(f, "rb") as src:
        while n := h.update_from(src):
            assert 0 < n <= PIECE
            total += n
    assert total == len(data)
    assert h.digest() == hashlib.sha256(b"head" + data).digest()
    assert h.update_from(io.BytesIO(b"")) == 0


def test_sha256_on_a_queue_of_ones_own() -> None:
    with wrapdrive.request_queue("sha256") as q:
        h = wrapdrive.sha256(blob(100000), queue=q)
        assert h.digest() == hashlib.sha256(blob(100000)).digest()
        with wrapdrive.request_queue("crc32c") as qc:
            with pytest.raises(wrapdrive.BadRequestError, match="sha256"):
                wrapdrive.sha256(queue=qc)
    with pytest.raises(wrapdrive.QueueReleasedError):
        h.update(b"x")  # its queue was released


# -- crc32c ---------------------------------------------------------------------------
@pytest.mark.slow(240)
def test_crc32c_any_split_gives_the_kernels_crc() -> None:
    rng = random.Random(3)
    for size in (0, 1, 4097, PIECE + 1, MAX + 1, 2 * MAX + 5, LARGEST):
        data = blob(size)
        want = kv.kernel_crc32c(data)
        assert wrapdrive.crc32c(data) == want
        crc = 0
        for p in split(data, cuts(size, rng)):
            crc = wrapdrive.crc32c(p, crc)
        assert crc == want, size
    assert wrapdrive.crc32c(b"123456789") == 0xE3069283
    with pytest.raises(ValueError):
        wrapdrive.crc32c(b"x", 1 << 32)


# -- zlib -----------------------------------------------------------------------------
@pytest.mark.slow(240)
@pytest.mark.parametrize("size,level", [(0, -1), (1, 6), (5000, 1), (PIECE + 1, 9),
                                        (300000, 0), (MAX + 1, 1), (LARGEST, 6)])
def test_compressobj_any_split_and_flush_inflates_to_the_input(size: int, level: int) -> None:
    rng = random.Random(size + level)
    data = compressible(size, size)
    for trial in range(2 if size <= PIECE + 1 else 1):
        c = wrapdrive.compressobj(level)
        out = bytearray()
        parts = split(data, cuts(size, rng))
        for i, p in enumerate(parts):
            out += c.compress(p)
            if trial and i < len(parts) - 1:
                mode = rng.choice([zlib.Z_NO_FLUSH, zlib.Z_SYNC_FLUSH, zlib.Z_FULL_FLUSH])
                out += c.flush(mode)
                if mode != zlib.Z_NO_FLUSH:  # all input so far can be inflated
                    upto = sum(len(q) for q in parts[:i + 1])
                    assert zlib.decompressobj().decompress(bytes(out)) == data[:upto]
        out += c.flush()
        assert zlib.decompress(bytes(out)) == data
        with pytest.raises(wrapdrive.StreamClosedError):
            c.compress(b"more")  # finished: zlib would raise too


@pytest.mark.parametrize("size,tail", [(0, b""), (1, b"x"), (5000, b"trailing"),
                                       (3 * PIECE + 9, b""), (MAX + 1, b"\x78\x9c"),
                                       (LARGEST, b"")],
                         ids=["0", "1-x", "5000-trailing", "3pieces+9", "max+1-zlibheader",
                              "64mib"])
@pytest.mark.slow(240)
def test_decompressobj_any_split_gives_the_input(size: int, tail: bytes) -> None:
    rng = random.Random(size + 7)
    data = compressible(size, size + 1)
    z = zlib.compress(data, 6)
    stream = z + tail
    for _ in range(2 if size <= PIECE + 1 else 1):
        d = wrapdrive.decompressobj()
        ref = zlib.decompressobj()
        out = bytearray()
        for p in split(stream, cuts(len(stream), rng)):
            out += d.decompress(p)
            ref.decompress(p)
        out += d.flush()
        assert bytes(out) == data
        assert (d.eof, d.unused_data, d.unconsumed_tail) == (ref.eof, ref.unused_data, b"")
        assert d.eof and d.unused_data == tail


def test_zlib_objects_on_every_slot_and_beyond() -> None:
    """A queue runs max_streams streams; the shared queues grow past that."""
    with wrapdrive.request_queue("zlib") as q:
        objs = [wrapdrive.compressobj(queue=q) for _ in range(q.max_streams)]
        with pytest.raises(wrapdrive.StreamSlotsExhaustedError):
            wrapdrive.compressobj(queue=q)
        objs[0].close()
        objs[0] = wrapdrive.compressobj(queue=q)  # the slot came back
        outs = [c.compress(bytes([i]) * 1000) + c.flush() for i, c in enumerate(objs)]
        assert [zlib.decompress(o) for o in outs] == [bytes([i]) * 1000
                                                     for i in range(len(objs))]
        many = [wrapdrive.decompressobj() for _ in range(q.max_streams + 1)]
        assert streams_in_driver() == 0  # a slot is taken in the driver on the first piece
        z = zlib.compress(b"hello")
        assert [d.decompress(z) for d in many] == [b"hello"] * len(many)
        del many


# -- bad chains -----------------------------------------------------------------------
def test_bad_streams_are_answered_with_a_status() -> None:
    data = compressible(20000, 9)
    z = zlib.compress(data)
    d = wrapdrive.decompressobj()
    bad = z[:2] + b"\x07" + z[3:]  # a final block of the reserved type 3
    with pytest.raises(wrapdrive.RequestFailedError) as exc:
        d.decompress(bad)
    assert exc.value.status == abi.WD_STS_BAD_DATA
    with pytest.raises(wrapdrive.RequestFailedError):
        d.decompress(z)  # the stream is over: the same error again
    d.close()
    # garbage from the first byte
    with pytest.raises(wrapdrive.RequestFailedError):
        wrapdrive.decompressobj().decompress(b"not a zlib stream at all")
    # zlib's formats other than its own, and its other knobs
    with pytest.raises(ValueError):
        wrapdrive.compressobj(wbits=-15)
    with pytest.raises(ValueError):
        wrapdrive.compressobj(level=12)
    with pytest.raises(wrapdrive.BadRequestError):
        wrapdrive.decompressobj().decompress(z, 100)
    # a truncated stream is not an error until the caller asks for more than zlib does
    d = wrapdrive.decompressobj()
    assert d.decompress(z[:-10]) + d.flush() == zlib.decompressobj().decompress(z[:-10])
    assert not d.eof
    d.close()


# -- processes ------------------------------------------------------------------------
def test_a_process_killed_mid_stream_leaves_no_stream() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            cs = [wrapdrive.compressobj() for _ in range(3)]
            for c in cs:
                c.compress(blob(PIECE + 10))  # a full piece: the stream is in the driver
            h = wrapdrive.sha256(blob(PIECE * 3))
            assert h is not None
            os.write(w, b"x")
            time.sleep(120)
        finally:
            os._exit(1)
    os.close(w)
    try:
        assert os.read(r, 1) == b"x"
        assert streams_in_driver() == 3
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
    assert streams_in_driver() == 0
    # The dead child's mdevs go back at the next request (libwd's reclaim).
    with wrapdrive.request_queue("zlib"):
        pass
    with wrapdrive.request_queue("sha256"):
        pass


@pytest.mark.slow(240)
def test_a_forked_child_gets_its_own_queue() -> None:
    data = blob(3 * PIECE + 11)
    h = wrapdrive.sha256(data[:PIECE + 5])  # pieces in flight at fork are waited for
    parent_q = wrapdrive.shared.shared_queue("sha256")
    c = wrapdrive.compressobj()
    c.compress(b"abc")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            h.update(data[PIECE + 5:])  # the inherited object moves to the child's queue
            q = wrapdrive.shared.shared_queue("sha256")
            ok = h.digest() == hashlib.sha256(data).digest() and q is not parent_q and \
                wrapdrive.crc32c(b"123456789") == 0xE3069283
            try:
                c.compress(b"x")  # a zlib stream cannot follow
                ok = False
            except wrapdrive.StreamClosedError:
                pass
            close_shared()
            os.write(w, b"1" if ok else b"0")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    got = os.read(r, 1)
    os.close(r)
    assert os.waitpid(pid, 0)[1] == 0
    assert got == b"1"
    h.update(b"parent")  # the parent's objects are untouched
    assert h.digest() == hashlib.sha256(data[:PIECE + 5] + b"parent").digest()
    assert zlib.decompress(c.compress(b"def") + c.flush()) == b"abcdef"
