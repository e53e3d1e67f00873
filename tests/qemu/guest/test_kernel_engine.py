"""wd_dummy engine: every algorithm byte-exact with an independent reference
(the guest kernel's crypto API, hashlib, zlib), the status of every kind of
bad descriptor in the order uapi/wrapdrive.h fixes, ordering."""
import hashlib
import mmap
import os
import random
import struct
import sys
import time
import zlib

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402

SIZES = [0, 1, 63, 4096, 4097, 65536 + 13, 1 << 20]


def rnd(n, seed=1):
    return random.Random(seed).randbytes(n)


def test_reference_crc32c_is_the_standard_one():
    """The reference the engine is judged by gives the CRC-32C check value."""
    assert kv.kernel_crc32c(b"123456789") == 0xE3069283
    assert kv.kernel_crc32c(b"6789", seed=kv.kernel_crc32c(b"12345")) == 0xE3069283


@pytest.mark.parametrize("size", SIZES)
def test_memcpy(size):
    data = rnd(size)
    with kv.Queue("wd_dummy.0", "memcpy") as q:
        _, src, _ = q.dma_buffer(size, data)
        dst_m, dst, _ = q.dma_buffer(size + 64, b"\xaa" * (size + 64))
        c = q.run(kv.WD_OP_MEMCPY, src, size, dst, size + 64)
        assert (c.status, c.out_len, c.result, c.flags) == (0, size, 0, 0)
        assert dst_m[:size] == data
        assert dst_m[size:size + 64] == b"\xaa" * 64  # nothing beyond out_len


@pytest.mark.parametrize("size", SIZES)
def test_crc32c(size):
    data = rnd(size, 2)
    with kv.Queue("wd_dummy.1", "crc32c") as q:
        _, src, _ = q.dma_buffer(size, data)
        c = q.run(kv.WD_OP_CRC32C, src, size)
        assert (c.status, c.out_len, c.flags) == (0, 0, 0)
        assert c.result == kv.kernel_crc32c(data)


def test_crc32c_seed_chains():
    """desc.seed continues a CRC: any split gives the one-shot result."""
    data = rnd(200000, 9)
    with kv.Queue("wd_dummy.0", "crc32c") as q:
        m, src, _ = q.dma_buffer(len(data), data)
        whole = q.run(kv.WD_OP_CRC32C, src, len(data)).result
        assert whole == kv.kernel_crc32c(data)
        for cuts in ([0], [1], [4096], [4095, 4097], [65536, 131072, 199999], [len(data)]):
            crc, prev = 0, 0
            for cut in [*cuts, len(data)]:
                c = q.run(kv.WD_OP_CRC32C, src + prev, cut - prev, seed=crc)
                assert c.status == 0
                crc, prev = c.result, cut
            assert crc == whole, cuts


@pytest.mark.parametrize("size", SIZES)
def test_sha256(size):
    data = rnd(size, 3)
    with kv.Queue("wd_dummy.0", "sha256") as q:
        _, src, _ = q.dma_buffer(size, data)
        dst_m, dst, _ = q.dma_buffer(64)
        c = q.run(kv.WD_OP_SHA256, src, size, dst, 64)
        assert (c.status, c.out_len, c.result) == (0, 32, 0)
        assert dst_m[:32] == hashlib.sha256(data).digest()
        assert dst_m[32:64] == bytes(32)


def _compressible(size, seed=4):
    return (rnd(size // 2, seed) + b"wrapdrive" * (size // 18 + 1))[:size]


@pytest.mark.parametrize("size", [0, 1, 5000, 300000, 1 << 20])
def test_zlib_roundtrip(size):
    data = _compressible(size)
    with kv.Queue("wd_dummy.0", "zlib") as q:
        _, src, _ = q.dma_buffer(size, data)
        cap = kv.abi.deflate_bound(size)
        comp_m, comp, _ = q.dma_buffer(cap)
        c = q.run(kv.WD_OP_DEFLATE, src, size, comp, cap)
        assert (c.status, c.result) == (0, size)
        assert 0 < c.out_len <= cap
        assert zlib.decompress(comp_m[:c.out_len]) == data
        # Inflate what Python compressed.
        pz = zlib.compress(data)
        _, psrc, _ = q.dma_buffer(len(pz), pz)
        out_m, out, _ = q.dma_buffer(max(size, 1))
        c = q.run(kv.WD_OP_INFLATE, psrc, len(pz), out, max(size, 1))
        assert (c.status, c.out_len, c.result) == (0, size, len(pz))
        assert c.flags == kv.WD_CF_STREAM_END
        assert out_m[:size] == data


def test_deflate_levels():
    data = _compressible(200000, 11)
    n = len(data)
    bound = kv.abi.deflate_bound(n)
    sizes = {}
    with kv.Queue("wd_dummy.1", "zlib") as q:
        _, src, _ = q.dma_buffer(n, data)
        m, dst, _ = q.dma_buffer(bound)
        for level in (kv.WD_LEVEL_DEFAULT, 1, 6, 9, kv.WD_LEVEL_STORE):
            c = q.run(kv.WD_OP_DEFLATE, src, n, dst, bound, level=level)
            assert c.status == 0, level
            assert zlib.decompress(m[:c.out_len]) == data
            sizes[level] = c.out_len
    assert sizes[kv.WD_LEVEL_DEFAULT] == sizes[6]
    assert sizes[9] <= sizes[6] <= sizes[1] < n
    assert n < sizes[kv.WD_LEVEL_STORE] <= bound  # stored blocks: never smaller


def test_inflate_stops_at_the_end_of_the_first_stream():
    a, b = rnd(3000, 12), rnd(5000, 13)
    za, zb = zlib.compress(a), zlib.compress(b)
    with kv.Queue("wd_dummy.0", "zlib") as q:
        for tail in (b"trailing garbage", zb):
            _, src, _ = q.dma_buffer(len(za) + len(tail), za + tail)
            m, dst, _ = q.dma_buffer(16384)
            c = q.run(kv.WD_OP_INFLATE, src, len(za) + len(tail), dst, 16384)
            assert (c.status, c.out_len, c.result, c.flags) == (0, len(a), len(za),
                                                                kv.WD_CF_STREAM_END)
            assert m[:len(a)] == a
        # A truncated one-shot stream is corrupt input.
        _, src, _ = q.dma_buffer(len(za), za)
        c = q.run(kv.WD_OP_INFLATE, src, len(za) - 1, dst, 16384)
        assert (c.status, c.out_len, c.result, c.flags) == (kv.WD_STS_BAD_DATA, 0, 0, 0)


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
        D, INF = kv.WD_OP_DEFLATE, kv.WD_OP_INFLATE
        cases = [
            (dict(opcode=kv.WD_OP_CRC32C, src=src, src_len=10), kv.WD_STS_BAD_OPCODE),
            (dict(opcode=99, src=src, src_len=10), kv.WD_STS_BAD_OPCODE),
            (dict(opcode=D, src=0x7000000000, src_len=10, dst=dst, dst_len=4096),
             kv.WD_STS_BAD_ADDR),
            (dict(opcode=D, src=src, src_len=8192, dst=dst, dst_len=4096), kv.WD_STS_BAD_ADDR),
            (dict(opcode=D, src=src, src_len=kv.WD_MAX_LEN + 1, dst=dst, dst_len=4096),
             kv.WD_STS_BAD_LEN),
            (dict(opcode=D, src=(1 << 64) - 16, src_len=32, dst=dst, dst_len=4096),
             kv.WD_STS_BAD_LEN),
            (dict(opcode=INF, src=src, src_len=len(pz), dst=small, dst_len=10), kv.WD_STS_BAD_DATA),
            (dict(opcode=INF, src=bsrc, src_len=len(bad), dst=small, dst_len=4096),
             kv.WD_STS_BAD_DATA),
            (dict(opcode=D, src=src, src_len=len(data), dst=dst, dst_len=4), kv.WD_STS_NOSPC),
            (dict(opcode=D, src=src, src_len=len(data), dst=dst, dst_len=4096, level=11),
             kv.WD_STS_BAD_FLAGS),
            (dict(opcode=D, src=src, src_len=len(data), dst=dst, dst_len=4096, flush=3),
             kv.WD_STS_BAD_FLAGS),
            (dict(opcode=kv.WD_OP_NOP, flags=1 << 7), kv.WD_STS_BAD_FLAGS),
            (dict(opcode=kv.WD_OP_NOP, __rsvd=1), kv.WD_STS_BAD_FLAGS),
            (dict(opcode=kv.WD_OP_NOP, __rsvd=1 << 64), kv.WD_STS_BAD_FLAGS),
        ]
        for i, (kw, want) in enumerate(cases):
            c = q.run(tag=100 + i, **kw)
            assert c.tag == 100 + i
            assert c.status == want, (kw, c)
            if want:
                assert (c.out_len, c.result, c.flags) == (0, 0, 0), (kw, c)
        # Inflate of a valid stream into too small an output.
        _, psrc, _ = q.dma_buffer(len(pz), pz)
        assert q.run(INF, psrc, len(pz), small, 10).status == kv.WD_STS_NOSPC
        # The queue keeps working.
        assert q.run(kv.WD_OP_NOP, tag=1)[:2] == (1, 0)
    with kv.Queue("wd_dummy.0", "sha256") as q:
        _, src, _ = q.dma_buffer(64, b"x" * 64)
        _, dst, _ = q.dma_buffer(64)
        assert q.run(kv.WD_OP_SHA256, src, 64, dst, 31).status == kv.WD_STS_NOSPC
        m, ro, _ = q.dma_buffer(64, read_only=True)
        assert q.run(kv.WD_OP_SHA256, src, 64, ro, 32).status == kv.WD_STS_BAD_ADDR
    with kv.Queue("wd_dummy.0", "memcpy") as q:
        _, src, _ = q.dma_buffer(4096)
        # Chaining flags mean nothing to memcpy.
        for flags in (kv.WD_DF_MORE, kv.WD_DF_CONT):
            c = q.run(kv.WD_OP_MEMCPY, src, 64, src + 2048, 64, flags=flags)
            assert c.status == kv.WD_STS_BAD_FLAGS


def test_first_flaw_wins():
    """A descriptor with several flaws gets the status checked first
    (uapi/wrapdrive.h: OPCODE, FLAGS, LEN, CHAIN, NOSPC, then ADDR ...)."""
    unmapped = 0x7000000000
    with kv.Queue("wd_dummy.1", "memcpy") as q:
        over = kv.WD_MAX_LEN + 1
        ladder = [
            (dict(opcode=kv.WD_OP_SHA256, flags=1 << 9, src_len=over, src=unmapped, dst_len=1),
             kv.WD_STS_BAD_OPCODE),
            (dict(opcode=kv.WD_OP_MEMCPY, flags=1 << 9, src_len=over, src=unmapped, dst_len=1),
             kv.WD_STS_BAD_FLAGS),
            (dict(opcode=kv.WD_OP_MEMCPY, src_len=over, src=unmapped, dst_len=1),
             kv.WD_STS_BAD_LEN),
            (dict(opcode=kv.WD_OP_MEMCPY, src_len=64, src=unmapped, dst=unmapped, dst_len=1),
             kv.WD_STS_NOSPC),
            (dict(opcode=kv.WD_OP_MEMCPY, src_len=64, src=unmapped, dst=unmapped, dst_len=64),
             kv.WD_STS_BAD_ADDR),
        ]
        for kw, want in ladder:
            assert q.run(**kw).status == want, kw


@pytest.mark.parametrize("tname,opcode", [("memcpy", "WD_OP_MEMCPY"), ("crc32c", "WD_OP_CRC32C"),
                                          ("sha256", "WD_OP_SHA256"), ("zlib", "WD_OP_DEFLATE")])
def test_nop_and_zero_lengths(tname, opcode):
    """NOP never touches memory; length 0 at address 0 is fine for every opcode."""
    with kv.Queue("wd_dummy.0", tname) as q:
        c = q.run(kv.WD_OP_NOP, src=0x7000000000, src_len=64, dst=0x10, dst_len=64)
        assert tuple(c)[1:] == (0, 0, 0, 0)
        assert q.run(kv.WD_OP_NOP, src_len=kv.WD_MAX_LEN + 1).status == kv.WD_STS_BAD_LEN
        _, dst, _ = q.dma_buffer(4096)
        dst_len = {"memcpy": 0, "crc32c": 0, "sha256": 32, "zlib": 4096}[tname]
        c = q.run(getattr(kv, opcode), 0, 0, dst if dst_len else 0, dst_len)
        assert c.status == 0, c
        if tname == "zlib":
            assert c.out_len > 0  # an empty zlib stream still has a header


def test_hostile_ring():
    with kv.Queue("wd_dummy.0", "crc32c") as q:
        # sq_tail far ahead: the engine never takes more than the ring holds.
        kv.store32(q.db, kv.DB_SQ_TAIL, 0x80000000)
        os.pwrite(q.dev, struct.pack("<I", 0x80000000), q.regions[kv.WD_REGION_DOORBELL][2])
        time.sleep(0.3)
        assert q.cq_tail() == 0  # a tail beyond the ring is ignored
        # Garbage in the SQ and the doorbell does not crash anything.
        q.sq[:] = b"\xff" * len(q.sq)
        q.db[:] = b"\xff" * len(q.db)
        time.sleep(0.3)
        kv.ioctl(q.dev, kv.VFIO_DEVICE_RESET)
        assert q.db[:] == bytes(len(q.db))  # reset zeroes the doorbell
        q.sq_tail = q.cq_head = 0
        assert q.run(kv.WD_OP_NOP, tag=4)[:2] == (4, 0)


def test_strong_and_weak_order():
    sizes = [1 << 20, 16, 300000, 8, 65536, 1]
    for tname, weak in (("crc32c", False), ("crc32c-weak", True)):
        with kv.Queue("wd_dummy.1", tname) as q:
            assert bool(q.capa & kv.WD_WEAK_ORDER) == weak
            data = rnd(1 << 20, 5)
            _, src, _ = q.dma_buffer(len(data), data)
            q.submit([kv.desc(t, kv.WD_OP_CRC32C, src, n) for t, n in enumerate(sizes)])
            cqes = q.reap(len(sizes))
            tags = [c.tag for c in cqes]
            assert sorted(tags) == list(range(len(sizes)))
            for c in cqes:
                assert c.status == 0
                assert c.result == kv.kernel_crc32c(data[:sizes[c.tag]])
            if weak:
                assert [sizes[t] for t in tags] == sorted(sizes)
            else:
                assert tags == list(range(len(sizes)))


@pytest.mark.parametrize("tname", ["sha256-sva", "memcpy-sva"])
def test_share_all_uses_process_va(tname):
    import ctypes
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
            assert c.status == 0 and dst[:32] == hashlib.sha256(data).digest()
        else:
            c = q.run(kv.WD_OP_MEMCPY, sa, len(data), da, len(data))
            assert c.status == 0 and dst[:] == data
        assert q.run(kv.WD_OP_NOP, tag=3)[:2] == (3, 0)
        bad = q.run(kv.WD_OP_MEMCPY if "memcpy" in tname else kv.WD_OP_SHA256, 0x10, 64, da, 64)
        assert bad.status == kv.WD_STS_BAD_ADDR


def test_debugfs_counters_and_pins():
    assert kv.dbg("pinned_pages") == 0
    with kv.Queue("wd_dummy.0", "memcpy") as q:
        qd = ("wd_dummy.0", q.uuid)
        _, src, _ = q.dma_buffer(3 * 4096, b"a" * 3 * 4096)
        _, dst, _ = q.dma_buffer(3 * 4096)
        assert q.run(kv.WD_OP_MEMCPY, src, 3 * 4096, dst, 3 * 4096).status == 0
        assert q.run(kv.WD_OP_NOP, flags=1 << 8).status == kv.WD_STS_BAD_FLAGS
        assert kv.dbg(*qd, "submitted") == 2
        assert kv.dbg(*qd, "completed") == 2
        assert kv.dbg(*qd, "errors") == 1
        assert kv.dbg(*qd, "pinned_pages") == 6
        assert kv.dbg("pinned_pages") == 6
        q.unmap_dma(src, 3 * 4096)
        assert kv.dbg(*qd, "pinned_pages") == 3
        assert kv.dbg("wd_dummy.0", "busy_ns") > 0
    assert kv.dbg("pinned_pages") == 0


@pytest.mark.parametrize("algo", ["sha256", "crc32c", "memcpy", "zlib", "inflate"])
def test_selfbench(algo):
    """Every name runs and reports its run; "inflate" also checks its output (an EIO
    otherwise), at 0, 1 and an odd size too."""
    p = os.path.join(kv.DEBUGFS, "wd_dummy.1", "selfbench")
    kv.write(p, f"{algo} 65536 20")
    a, size, count, ns = kv.read(p).split()
    assert (a, size, count) == (algo, "65536", "20") and int(ns) > 0
    for size in (0, 1, 100_003):
        kv.write(p, f"{algo} {size} 1")
        assert kv.read(p).split()[:3] == [algo, str(size), "1"]
    for bad in ("nope 10 10", "sha256 x 1", "sha256 10 0", f"sha256 {kv.WD_MAX_LEN + 1} 1"):
        with pytest.raises(OSError):
            kv.write(p, bad)


def test_max_len_memcpy_sha256_crc32c():
    """WD_MAX_LEN requests, checked against independent references."""
    n = kv.WD_MAX_LEN
    data = rnd(n, 7)
    with kv.Queue("wd_dummy.0", "memcpy") as q:
        _, src, _ = q.dma_buffer(n, data)
        dst_m, dst, _ = q.dma_buffer(n)
        assert q.run(kv.WD_OP_MEMCPY, src, n, dst, n)[1:3] == (0, n)
        assert dst_m[:n] == data
    with kv.Queue("wd_dummy.0", "sha256") as q:
        _, src, _ = q.dma_buffer(n, data)
        d_m, dst, _ = q.dma_buffer(32)
        assert q.run(kv.WD_OP_SHA256, src, n, dst, 32)[1:3] == (0, 32)
        assert d_m[:32] == hashlib.sha256(data).digest()
    with kv.Queue("wd_dummy.1", "crc32c") as q:
        _, src, _ = q.dma_buffer(n, data)
        c = q.run(kv.WD_OP_CRC32C, src, n)
        assert (c.status, c.result) == (0, kv.kernel_crc32c(data))
