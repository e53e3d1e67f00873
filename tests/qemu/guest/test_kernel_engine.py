"""wd_dummy engine: algorithms byte-exact with Python, errors, ordering."""
import hashlib
import os
import random
import sys
import zlib

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402

SIZES = [0, 1, 63, 4096, 4097, 65536 + 13, 1 << 20]


def rnd(n, seed=1):
    return random.Random(seed).randbytes(n)


@pytest.mark.parametrize("size", SIZES)
def test_memcpy(size):
    data = rnd(size)
    with kv.Queue("wd_dummy.0", "memcpy") as q:
        _, src, _ = q.dma_buffer(size, data)
        dst_m, dst, _ = q.dma_buffer(size)
        tag, sts, out_len, res = q.run(kv.WD_OP_MEMCPY, src, size, dst, size)
        assert (sts, out_len, res) == (0, size, 0)
        assert dst_m[:size] == data


@pytest.mark.parametrize("size", SIZES)
def test_crc32c(size):
    data = rnd(size, 2)
    with kv.Queue("wd_dummy.1", "crc32c") as q:
        _, src, _ = q.dma_buffer(size, data)
        _, sts, out_len, res = q.run(kv.WD_OP_CRC32C, src, size)
        assert sts == 0
        want = kv.crc32c(data) if size <= 65536 + 13 else None
        if want is not None:
            assert res == want
    assert kv.crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize("size", SIZES)
def test_sha256(size):
    data = rnd(size, 3)
    with kv.Queue("wd_dummy.0", "sha256") as q:
        _, src, _ = q.dma_buffer(size, data)
        dst_m, dst, _ = q.dma_buffer(32)
        _, sts, out_len, _ = q.run(kv.WD_OP_SHA256, src, size, dst, 32)
        assert (sts, out_len) == (0, 32)
        assert dst_m[:32] == hashlib.sha256(data).digest()


@pytest.mark.parametrize("size", [0, 1, 5000, 300000, 1 << 20])
def test_zlib_roundtrip(size):
    data = (rnd(size // 2, 4) + b"wrapdrive" * (size // 18 + 1))[:size]
    with kv.Queue("wd_dummy.0", "zlib") as q:
        _, src, _ = q.dma_buffer(size, data)
        cap = size + size // 8 + 1024
        comp_m, comp, _ = q.dma_buffer(cap)
        _, sts, clen, _ = q.run(kv.WD_OP_DEFLATE, src, size, comp, cap)
        assert sts == 0
        assert zlib.decompress(comp_m[:clen]) == data
        # Inflate what Python compressed.
        pz = zlib.compress(data)
        _, psrc, _ = q.dma_buffer(len(pz), pz)
        out_m, out, _ = q.dma_buffer(max(size, 1))
        _, sts, olen, _ = q.run(kv.WD_OP_INFLATE, psrc, len(pz), out, max(size, 1))
        assert (sts, olen) == (0, size)
        assert out_m[:size] == data


def test_error_statuses():
    with kv.Queue("wd_dummy.0", "zlib") as q:
        data = b"hello world" * 100
        _, src, _ = q.dma_buffer(len(data), data)
        _, dst, _ = q.dma_buffer(4096)
        pz = zlib.compress(data)
        bad = bytearray(pz)
        bad[5] ^= 0xFF
        _, bsrc, _ = q.dma_buffer(len(bad), bytes(bad))
        _, small, _ = q.dma_buffer(4096)
        cases = [
            (dict(opcode=kv.WD_OP_CRC32C, src=src, src_len=10), kv.WD_STS_BAD_OPCODE),
            (dict(opcode=99, src=src, src_len=10), kv.WD_STS_BAD_OPCODE),
            (dict(opcode=kv.WD_OP_DEFLATE, src=0x7000000000, src_len=10, dst=dst, dst_len=4096),
             kv.WD_STS_BAD_ADDR),
            (dict(opcode=kv.WD_OP_DEFLATE, src=src, src_len=8192, dst=dst, dst_len=4096),
             kv.WD_STS_BAD_ADDR),
            (dict(opcode=kv.WD_OP_DEFLATE, src=src, src_len=kv.WD_MAX_LEN + 1, dst=dst,
                  dst_len=4096), kv.WD_STS_BAD_LEN),
            (dict(opcode=kv.WD_OP_DEFLATE, src=(1 << 64) - 16, src_len=32, dst=dst,
                  dst_len=4096), kv.WD_STS_BAD_LEN),
            (dict(opcode=kv.WD_OP_INFLATE, src=src, src_len=len(pz), dst=small, dst_len=10),
             kv.WD_STS_BAD_DATA),
            (dict(opcode=kv.WD_OP_INFLATE, src=bsrc, src_len=len(bad), dst=small, dst_len=4096),
             kv.WD_STS_BAD_DATA),
            (dict(opcode=kv.WD_OP_DEFLATE, src=src, src_len=len(data), dst=dst, dst_len=4,
                  flags=0), kv.WD_STS_NOSPC),
            (dict(opcode=kv.WD_OP_NOP, flags=1), kv.WD_STS_BAD_FLAGS),
        ]
        for i, (kw, want) in enumerate(cases):
            c = q.run(tag=100 + i, **kw)
            assert c[0] == 100 + i
            assert c[1] == want, (kw, c)
        # Inflate of a valid stream into too small an output.
        _, psrc, _ = q.dma_buffer(len(pz), pz)
        assert q.run(kv.WD_OP_INFLATE, psrc, len(pz), small, 10)[1] == kv.WD_STS_NOSPC
        # The queue keeps working.
        assert q.run(kv.WD_OP_NOP, tag=1)[:2] == (1, 0)
    with kv.Queue("wd_dummy.0", "sha256") as q:
        _, src, _ = q.dma_buffer(64, b"x" * 64)
        _, dst, _ = q.dma_buffer(64)
        assert q.run(kv.WD_OP_SHA256, src, 64, dst, 31)[1] == kv.WD_STS_NOSPC
        m, ro, _ = q.dma_buffer(64, read_only=True)
        assert q.run(kv.WD_OP_SHA256, src, 64, ro, 32)[1] == kv.WD_STS_BAD_ADDR


def test_hostile_ring():
    with kv.Queue("wd_dummy.0", "crc32c") as q:
        # sq_tail far ahead: the engine never takes more than the ring holds.
        import struct
        kv.store32(q.db, 0, 0x80000000)
        q.submit([], kick=True)
        os.pwrite(q.dev, struct.pack("<I", 0x80000000), q.regions[0][2])
        import time
        time.sleep(0.3)
        assert q.cq_tail() == 0  # a tail beyond the ring is ignored
        # Garbage in the header and doorbell does not crash anything.
        q.ring[0:256] = b"\xff" * 256
        kv.ioctl(q.dev, kv.VFIO_DEVICE_RESET)
        q.sq_tail = q.cq_head = 0
        assert q.run(kv.WD_OP_NOP, tag=4)[:2] == (4, 0)


def test_strong_and_weak_order():
    sizes = [1 << 20, 16, 300000, 8, 65536, 1]
    for tname, weak in (("crc32c", False), ("crc32c-weak", True)):
        with kv.Queue("wd_dummy.1", tname) as q:
            assert bool(q.capa & kv.WD_WEAK_ORDER) == weak
            data = rnd(1 << 20, 5)
            _, src, _ = q.dma_buffer(len(data), data)
            q.submit([(t, kv.WD_OP_CRC32C, 0, src, 0, n, 0) for t, n in enumerate(sizes)])
            cqes = q.reap(len(sizes))
            tags = [c[0] for c in cqes]
            assert sorted(tags) == list(range(len(sizes)))
            for c in cqes:
                n = sizes[c[0]]
                assert c[1] == 0
                if n <= 65536:
                    assert c[3] == kv.crc32c(data[:n])
            if weak:
                assert tags != list(range(len(sizes)))
                assert [sizes[t] for t in tags] == sorted(sizes)
            else:
                assert tags == list(range(len(sizes)))


@pytest.mark.parametrize("tname", ["sha256-sva", "memcpy-sva"])
def test_share_all_uses_process_va(tname):
    import ctypes
    import mmap
    data = rnd(200000, 6)
    with kv.Queue("wd_dummy.0", tname) as q:
        assert q.capa & kv.WD_CAPA_SHARE_ALL
        src = mmap.mmap(-1, len(data))
        src[:] = data
        dst = mmap.mmap(-1, len(data))  # never touched: faulted in by the engine
        sa = ctypes.addressof(ctypes.c_char.from_buffer(src))
        da = ctypes.addressof(ctypes.c_char.from_buffer(dst))
        if tname.startswith("sha"):
            c = q.run(kv.WD_OP_SHA256, sa, len(data), da, 32)
            assert c[1] == 0 and dst[:32] == hashlib.sha256(data).digest()
        else:
            c = q.run(kv.WD_OP_MEMCPY, sa, len(data), da, len(data))
            assert c[1] == 0 and dst[:] == data
        assert q.run(kv.WD_OP_NOP, tag=3)[:2] == (3, 0)
        bad = q.run(kv.WD_OP_MEMCPY if "memcpy" in tname else kv.WD_OP_SHA256, 0x10, 64, da, 64)
        assert bad[1] == kv.WD_STS_BAD_ADDR


def test_debugfs_counters_and_pins():
    assert kv.dbg("pinned_pages") == 0
    with kv.Queue("wd_dummy.0", "memcpy") as q:
        qd = ("wd_dummy.0", q.uuid)
        _, src, _ = q.dma_buffer(3 * 4096, b"a" * 3 * 4096)
        _, dst, _ = q.dma_buffer(3 * 4096)
        assert q.run(kv.WD_OP_MEMCPY, src, 3 * 4096, dst, 3 * 4096)[1] == 0
        assert q.run(kv.WD_OP_NOP, flags=3)[1] == kv.WD_STS_BAD_FLAGS
        assert kv.dbg(*qd, "submitted") == 2
        assert kv.dbg(*qd, "completed") == 2
        assert kv.dbg(*qd, "errors") == 1
        assert kv.dbg(*qd, "pinned_pages") == 6
        assert kv.dbg("pinned_pages") == 6
        q.unmap_dma(src, 3 * 4096)
        assert kv.dbg(*qd, "pinned_pages") == 3
        assert kv.dbg("wd_dummy.0", "busy_ns") > 0
    assert kv.dbg("pinned_pages") == 0


@pytest.mark.parametrize("algo", ["sha256", "crc32c", "memcpy", "zlib"])
def test_selfbench(algo):
    p = os.path.join(kv.DEBUGFS, "wd_dummy.1", "selfbench")
    kv.write(p, f"{algo} 65536 20")
    a, size, count, ns = kv.read(p).split()
    assert (a, size, count) == (algo, "65536", "20") and int(ns) > 0
    for bad in ("nope 10 10", "sha256 x 1", "sha256 10 0", f"sha256 {kv.WD_MAX_LEN + 1} 1"):
        with pytest.raises(OSError):
            kv.write(p, bad)


def test_max_len_memcpy_and_sha256():
    """WD_MAX_LEN requests: beyond the per-queue pin cache (vfio_dma_rw path)."""
    n = kv.WD_MAX_LEN
    data = rnd(n, 7)
    with kv.Queue("wd_dummy.0", "memcpy") as q:
        _, src, _ = q.dma_buffer(n, data)
        dst_m, dst, _ = q.dma_buffer(n)
        assert q.run(kv.WD_OP_MEMCPY, src, n, dst, n)[1:3] == (0, n)
        assert dst_m[:n] == data
        assert kv.dbg("wd_dummy.0", q.uuid, "pinned_pages") == 4096
    with kv.Queue("wd_dummy.0", "sha256") as q:
        _, src, _ = q.dma_buffer(n, data)
        d_m, dst, _ = q.dma_buffer(32)
        assert q.run(kv.WD_OP_SHA256, src, n, dst, 32)[1] == 0
        assert d_m[:32] == hashlib.sha256(data).digest()


def test_zlib_matches_python_bytes():
    """Level-6 deflate output decompresses everywhere; report byte equality."""
    data = b"The quick brown fox jumps over the lazy dog. " * 2000
    with kv.Queue("wd_dummy.1", "zlib") as q:
        _, src, _ = q.dma_buffer(len(data), data)
        m, dst, _ = q.dma_buffer(len(data))
        _, sts, clen, _ = q.run(kv.WD_OP_DEFLATE, src, len(data), dst, len(data))
        assert sts == 0
        assert zlib.decompress(m[:clen]) == data
        assert m[:2] == zlib.compress(data)[:2]  # same RFC 1950 header
