"""Chained requests (uapi/wrapdrive.h, "Chaining"), on the kernel ABI alone:
any split of the input gives the one-shot result, byte for byte, against
hashlib, zlib and the kernel's own crc32c; every bad chain is answered with a
status; zlib streams live in the driver, bounded, and are gone after close,
reset and the owner's death (debugfs)."""
import hashlib
import os
import random
import signal
import sys
import time
import zlib

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402

# These start processes, unbind devices and move up to WD_MAX_LEN per request: under
# TCG on a loaded 2-core host one test can take minutes (the harness's default is 60 s).
pytestmark = pytest.mark.slow(300)

MORE, CONT = kv.WD_DF_MORE, kv.WD_DF_CONT
MAX = kv.WD_MAX_LEN
BLOCK = kv.WD_SHA256_BLOCK_LEN
DEV = "wd_dummy.0"
FLUSHES = (kv.WD_FLUSH_NONE, kv.WD_FLUSH_SYNC, kv.WD_FLUSH_FULL)

_BLOB = {}


def blob(n):
    """n random bytes: prefixes of one 64 MiB blob, made once."""
    if "b" not in _BLOB:
        _BLOB["b"] = random.Random(1).randbytes(64 << 20)
    return _BLOB["b"][:n]


def compressible(n, seed):
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < n:
        out += rng.randbytes(rng.randrange(1, 300)) if rng.random() < 0.5 else \
            bytes([rng.randrange(256)]) * rng.randrange(1, 500)
    return bytes(out[:n])


def chain_flags(i, n):
    """WD_DF_* of piece i of n: one-shot, first, middle or last."""
    if n == 1:
        return 0
    return (CONT if i else 0) | (MORE if i < n - 1 else 0)


def cut_points(size, rng, step=MAX):
    """Cuts at 0, 1, block boundaries +-1, WD_MAX_LEN +-1 and random places,
    with no piece longer than `step` (WD_MAX_LEN)."""
    special = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 4095, 4097, 65535, 65537,
               MAX - 1, MAX + 1, size - 1, size]
    cuts = {c for c in special if 0 <= c <= size and rng.random() < 0.4}
    cuts |= {rng.randrange(size + 1) for _ in range(rng.randrange(4))}
    pts, last = [], 0
    for c in sorted(cuts) + [size]:
        while c - last > step:
            last += rng.randrange(step // 2, step + 1)
            pts.append(last)
        if c != size or c == 0:
            pts.append(c)
        last = c
    return pts


def pieces(size, cuts):
    """(offset, length) of each piece; a cut at 0 or twice at one place makes
    an empty piece."""
    bounds = [0] + sorted(cuts) + [size]
    return [(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False)]


# -- sha256 ---------------------------------------------------------------------------
def sha256_chain(q, src, ps, ctx, dst):
    """Submit every piece at once (the queue keeps them in order)."""
    descs = []
    for i, (off, n) in enumerate(ps):
        flags = chain_flags(i, len(ps))
        last = not flags & MORE
        descs.append(kv.desc(i, kv.WD_OP_SHA256, src + off, n, dst if last else 0,
                             32 if last else 0, flags=flags, ctx=ctx))
    for k in range(0, len(descs), q.entries):
        q.submit(descs[k:k + q.entries])
        for c in q.reap(min(q.entries, len(descs) - k), timeout=600):
            assert (c.status, c.flags) == (0, 0), c
            assert c.out_len == (32 if c.tag == len(ps) - 1 else 0)


SHA_SIZES = [0, 1, 63, 64, 65, 4095, 4097, 100000, (1 << 20) + 3, MAX - 1, MAX + 1,
             3 * MAX + 7, 64 << 20]


def test_sha256_any_split_gives_the_digest():
    rng = random.Random(2)
    big = blob(64 << 20)
    with kv.Queue(DEV, "sha256") as q:
        bm, src, _ = q.dma_buffer(len(big), big)
        cm, ctx, _ = q.dma_buffer(kv.SHA_CTX.size)
        dm, dst, _ = q.dma_buffer(64)
        for size in SHA_SIZES:
            want = hashlib.sha256(big[:size]).digest()
            for _ in range(3 if size < MAX else 1):
                cuts = cut_points(size, rng)
                dm[:32] = bytes(32)
                sha256_chain(q, src, pieces(size, cuts), ctx, dst)
                assert dm[:32] == want, (size, cuts)
                assert kv.SHA_CTX.unpack_from(cm)["magic"] == 0  # a finished chain


def test_sha256_context_is_the_documented_state():
    """After a piece with MORE the context holds the total, the intermediate
    hash and the pending bytes, as struct wd_sha256_ctx says."""
    data = blob(1000)
    with kv.Queue(DEV, "sha256") as q:
        _, src, _ = q.dma_buffer(len(data), data)
        cm, ctx, _ = q.dma_buffer(kv.SHA_CTX.size)
        c = q.run(kv.WD_OP_SHA256, src, 130, flags=MORE, ctx=ctx)
        assert c[1:] == (0, 0, 0, 0)
        f = kv.SHA_CTX.unpack_from(cm)
        assert (f["magic"], f["total"]) == (kv.WD_SHA256_CTX_MAGIC, 130)
        off, size = kv.SHA_CTX.fields["pending"]
        assert cm[off:off + 2] == data[128:130] and cm[off + 2:off + size] == bytes(size - 2)


# -- crc32c ---------------------------------------------------------------------------
def test_crc32c_any_split_gives_the_crc():
    rng = random.Random(3)
    big = blob(2 * MAX + 5)
    with kv.Queue("wd_dummy.1", "crc32c") as q:
        _, src, _ = q.dma_buffer(len(big), big)
        for size in (0, 1, 63, 4097, 100000, MAX + 1, 2 * MAX + 5):
            want = kv.kernel_crc32c(big[:size])
            for _ in range(3):
                crc = 0
                for off, n in pieces(size, cut_points(size, rng)):
                    c = q.run(kv.WD_OP_CRC32C, src + off, n, seed=crc)
                    assert c.status == 0
                    crc = c.result
                assert crc == want, size


# -- zlib -----------------------------------------------------------------------------
class Zq:
    """A zlib queue with a source buffer and one output buffer."""

    def __init__(self, q, data, cap):
        self.q = q
        self.sm, self.src, _ = q.dma_buffer(max(len(data), 1), data)
        self.cap = cap
        self.dm, self.dst, _ = q.dma_buffer(cap)

    def piece(self, opcode, off, n, flags, slot=0, tag=0, **kw):
        """One piece and every continuation WD_CF_DST_FULL asks for.
        Returns (output, src bytes used, cqe flags of the last request)."""
        out = bytearray()
        used = 0
        while True:
            c = self.q.run(opcode, self.src + off, n, self.dst, self.cap, tag=tag,
                           flags=flags, stream=slot, **kw)
            assert c.status == 0, c
            out += self.dm[:c.out_len]
            used += c.result
            off += c.result
            n -= c.result
            if not c.flags & kv.WD_CF_DST_FULL:
                return bytes(out), used, c.flags
            flags |= CONT


def deflate_chain(zq, ps, flushes, level, slot=0, check=None):
    if len(ps) == 1:  # a chain still: the first piece, then an empty last one
        ps = ps + [(ps[0][0] + ps[0][1], 0)]
    out = bytearray()
    for i, (off, n) in enumerate(ps):
        flags = chain_flags(i, len(ps))
        part, used, cflags = zq.piece(kv.WD_OP_DEFLATE, off, n, flags, slot=slot,
                                      level=level, flush=flushes[i])
        assert used == n and cflags == 0
        out += part
        if check and flags & MORE and flushes[i] != kv.WD_FLUSH_NONE:
            check(bytes(out), off + n)
    return bytes(out)


@pytest.mark.parametrize("size,level,cap", [
    (0, kv.WD_LEVEL_DEFAULT, 64), (1, 6, 7), (5000, 1, 97), (300000, 9, 4096),
    (300000, kv.WD_LEVEL_STORE, 65536), (MAX + 1, 1, MAX)])
def test_deflate_any_split_inflates_to_the_input(size, level, cap):
    rng = random.Random(size + level)
    data = compressible(size, size)
    with kv.Queue(DEV, "zlib") as q:
        zq = Zq(q, data, cap)
        whole = None
        for trial in range(3 if size < MAX else 1):
            ps = pieces(size, cut_points(size, rng))
            flushes = [rng.choice(FLUSHES) for _ in ps]

            def check(out, upto):
                # After a sync or full flush, all input so far comes out.
                d = zlib.decompressobj()
                assert d.decompress(out) == data[:upto]

            out = deflate_chain(zq, ps, flushes + [kv.WD_FLUSH_NONE], level, slot=trial,
                                check=check)
            assert zlib.decompress(out) == data
            plain = deflate_chain(zq, ps, [kv.WD_FLUSH_NONE] * (len(ps) + 1), level)
            assert zlib.decompress(plain) == data
            if level == kv.WD_LEVEL_STORE:
                continue  # stored block sizes follow the input's pieces
            # Compressing without flushes, the bytes do not depend on the split.
            if whole is None:
                whole = plain
            assert plain == whole
        assert kv.dummy_dbg(DEV, "streams") == 0


def inflate_chain(zq, ps, slot=0):
    """Returns (output, stream bytes used); stops at WD_CF_STREAM_END."""
    out = bytearray()
    total = 0
    for i, (off, n) in enumerate(ps):
        part, used, cflags = zq.piece(kv.WD_OP_INFLATE, off, n, chain_flags(i, len(ps)),
                                      slot=slot)
        out += part
        total += used
        if cflags & kv.WD_CF_STREAM_END:
            return bytes(out), total
        assert used == n
    raise AssertionError("no WD_CF_STREAM_END")


@pytest.mark.parametrize("size,level,cap,tail", [
    (0, 6, 16, b""), (1, 1, 1, b"x"), (5000, 9, 333, b"trailing"),
    (300000, 6, 4096, b""), (4 << 20, 1, 1 << 20, b"\x78\x9c")],
    ids=["0", "1-x", "5000-trailing", "300000", "4MiB-zlibheader"])
def test_inflate_any_split_gives_the_input(size, level, cap, tail):
    rng = random.Random(size + 7)
    data = compressible(size, size + 1)
    z = zlib.compress(data, level)
    stream = z + tail
    with kv.Queue(DEV, "zlib") as q:
        zq = Zq(q, stream, cap)
        for trial in range(4):
            ps = pieces(len(stream), cut_points(len(stream), rng))
            if tail:  # the stream may not end in the last piece
                ps = [p for p in ps if p[0] <= len(z)] if rng.random() < 0.5 else ps
            out, used = inflate_chain(zq, ps, slot=trial)
            assert out == data and used == len(z)
        assert kv.dummy_dbg(DEV, "streams") == 0


def test_streams_side_by_side():
    """Several slots of one queue in use at once, their pieces interleaved."""
    rng = random.Random(5)
    datas = [compressible(200000, s) for s in range(4)]
    base = [200000 * i for i in range(4)]
    with kv.Queue(DEV, "zlib") as q:
        zq = Zq(q, b"".join(datas), 1 << 20)
        splits = [pieces(len(d), cut_points(len(d), rng)) for d in datas]
        todo = [list(enumerate(p)) for p in splits]
        outs = [bytearray() for _ in datas]
        while any(todo):
            for i, t in enumerate(todo):  # one piece of each stream in turn
                if t:
                    k, (off, n) = t.pop(0)
                    flags = chain_flags(k, len(splits[i]))
                    outs[i] += zq.piece(kv.WD_OP_DEFLATE, base[i] + off, n, flags, slot=i)[0]
        for d, o in zip(datas, outs, strict=True):
            assert zlib.decompress(bytes(o)) == d
    assert kv.dummy_dbg(DEV, "streams") == 0


# -- bad chains -----------------------------------------------------------------------
def test_bad_chains_get_a_status():
    data = compressible(20000, 9)
    z = zlib.compress(data)
    with kv.Queue(DEV, "zlib") as q:
        assert q.max_streams == int(kv.param("max_streams")) > 0
        zq = Zq(q, z + data, 1 << 16)
        zsrc, dsrc = zq.src, zq.src + len(z)
        D, INF = kv.WD_OP_DEFLATE, kv.WD_OP_INFLATE

        def run(opcode, src, n, flags, slot=0, **kw):
            c = q.run(opcode, src, n, zq.dst, zq.cap, flags=flags, stream=slot, **kw)
            if c.status:
                assert (c.out_len, c.result, c.flags) == (0, 0, 0), c
            return c

        for op in (D, INF):
            assert run(op, dsrc, 100, CONT).status == kv.WD_STS_BAD_CHAIN  # empty slot
            assert run(op, dsrc, 100, CONT | MORE, slot=3).status == kv.WD_STS_BAD_CHAIN
            for slot in (q.max_streams, 0xFFFF):
                assert run(op, dsrc, 100, MORE, slot=slot).status == kv.WD_STS_BAD_CHAIN
                assert run(op, dsrc, 100, CONT, slot=slot).status == kv.WD_STS_BAD_CHAIN
        # The first flaw wins: lengths and flags before chaining.
        assert run(D, dsrc, MAX + 1, CONT).status == kv.WD_STS_BAD_LEN
        assert run(D, dsrc, 100, CONT, level=11).status == kv.WD_STS_BAD_FLAGS
        assert run(D, dsrc, 100, CONT | (1 << 5)).status == kv.WD_STS_BAD_FLAGS
        # A stream of the other opcode is not this one's state.
        assert run(D, dsrc, 1000, MORE).status == 0
        assert run(INF, zsrc, 10, CONT | MORE).status == kv.WD_STS_BAD_CHAIN
        assert run(D, dsrc + 1000, 1000, CONT).status == 0  # still intact, now over
        assert run(D, dsrc, 10, CONT).status == kv.WD_STS_BAD_CHAIN  # over: slot freed
        # An inflate stream ends where its data ends; continuing it is an error.
        c = run(INF, zsrc, len(z) + 50, MORE)
        assert (c.status, c.flags, c.result, c.out_len) == \
            (0, kv.WD_CF_STREAM_END, len(z), len(data))
        assert run(INF, zsrc + len(z), 10, CONT | MORE).status == kv.WD_STS_BAD_CHAIN
        # Corrupt data ends the stream: the slot is freed.  (0x07: a final
        # block of the reserved type 3.)
        bad = z[:2] + b"\x07" + z[3:]
        bm, bsrc, _ = q.dma_buffer(len(bad), bad)
        assert run(INF, bsrc, 2, MORE).status == 0
        assert run(INF, bsrc + 2, len(bad) - 2, CONT | MORE).status == kv.WD_STS_BAD_DATA
        assert run(INF, bsrc, 10, CONT).status == kv.WD_STS_BAD_CHAIN
        # A last piece whose data ends before the stream: corrupt input, freed.
        assert run(INF, zsrc, 100, MORE).status == 0
        assert run(INF, zsrc + 100, 100, CONT).status == kv.WD_STS_BAD_DATA
        assert run(INF, zsrc, 10, CONT).status == kv.WD_STS_BAD_CHAIN
        # A first piece on a busy slot starts over.
        assert run(D, dsrc, 500, MORE, slot=1).status == 0
        assert kv.dummy_dbg(DEV, "streams") == 1
        assert run(INF, zsrc, 10, MORE, slot=1).status == 0
        assert kv.dummy_dbg(DEV, "streams") == 1
        out, used, _ = zq.piece(INF, 10, len(z) - 10, CONT, slot=1)
        assert used == len(z) - 10 and out == data[len(data) - len(out):]
        assert run(kv.WD_OP_NOP, 0, 0, 0).status == 0
    with kv.Queue(DEV, "sha256") as q:
        assert q.max_streams == 0
        _, src, _ = q.dma_buffer(4096, data[:4096])
        cm, ctx, _ = q.dma_buffer(kv.SHA_CTX.size)
        _, dst, _ = q.dma_buffer(64)
        _, ro, _ = q.dma_buffer(kv.SHA_CTX.size, read_only=True)
        S = kv.WD_OP_SHA256

        def run(n, flags, ctx_, dst_len=32):
            c = q.run(S, src, n, dst, dst_len, flags=flags, ctx=ctx_)
            if c.status:
                assert (c.out_len, c.result, c.flags) == (0, 0, 0), c
            return c.status

        assert run(100, CONT, ctx) == kv.WD_STS_BAD_CHAIN  # no magic
        assert run(100, CONT | MORE, ctx) == kv.WD_STS_BAD_CHAIN
        assert run(100, MORE, ctx, dst_len=0) == 0  # no digest due: no room needed
        assert run(100, CONT, ctx, dst_len=31) == kv.WD_STS_NOSPC  # found before the context
        assert run(100, CONT, ctx) == 0
        assert run(100, CONT, ctx) == kv.WD_STS_BAD_CHAIN  # the chain is over
        assert run(100, MORE, 0x7000000000) == kv.WD_STS_BAD_ADDR
        assert run(100, CONT, 0x7000000000) == kv.WD_STS_BAD_ADDR
        assert run(100, MORE, ro) == kv.WD_STS_BAD_ADDR  # the state cannot be stored
        assert run(100, MORE, (1 << 64) - 64) == kv.WD_STS_BAD_LEN  # wraps
    for tname, op in (("crc32c", kv.WD_OP_CRC32C), ("memcpy", kv.WD_OP_MEMCPY),
                      ("zlib", kv.WD_OP_NOP)):
        with kv.Queue(DEV, tname) as q:
            for flags in (MORE, CONT, MORE | CONT):
                assert q.run(op, flags=flags).status == kv.WD_STS_BAD_FLAGS


# -- order on a weakly ordered queue ----------------------------------------------------
def test_chained_requests_keep_their_order_on_a_weak_queue():
    data = blob(300000)
    sizes = [200000, 10, 150000, 5, 100000, 1]
    with kv.Queue(DEV, "sha256-weak") as q:
        assert q.capa & kv.WD_WEAK_ORDER
        _, src, _ = q.dma_buffer(len(data), data)
        cm, ctx, _ = q.dma_buffer(kv.SHA_CTX.size)
        dm, dst, _ = q.dma_buffer(64 * 16)
        ps = pieces(len(data), [100000, 100001, 250000])
        descs, chain_tags = [], []
        for i, (off, n) in enumerate(ps):
            # a one-shot, then a chain piece, alternately
            descs.append(kv.desc(100 + i, kv.WD_OP_SHA256, src, sizes[i], dst + 64 * (i + 1), 32))
            flags = chain_flags(i, len(ps))
            descs.append(kv.desc(i, kv.WD_OP_SHA256, src + off, n, dst, 32, flags=flags, ctx=ctx))
            chain_tags.append(i)
        q.submit(descs)
        tags = [c.tag for c in q.reap(len(descs)) if c.status == 0]
        assert len(tags) == len(descs)
        assert [t for t in tags if t < 100] == chain_tags
        singles = [t for t in tags if t >= 100]
        assert [sizes[t - 100] for t in singles] == sorted(sizes[:len(ps)])  # reordered
        assert dm[:32] == hashlib.sha256(data).digest()
        for i in range(len(ps)):
            assert dm[64 * (i + 1):64 * (i + 1) + 32] == hashlib.sha256(data[:sizes[i]]).digest()
    with kv.Queue(DEV, "zlib-weak") as q:
        comp = compressible(400000, 3)
        room = 256 << 10
        zq = Zq(q, comp, 8 * room)
        ps = pieces(len(comp), [1, 4097, 200000, 333333])
        descs = []
        for i, (off, n) in enumerate(ps):
            descs.append(kv.desc(100 + i, kv.WD_OP_DEFLATE, zq.src, 1000 * (len(ps) - i),
                                 zq.dst + 6 * room, room))
            descs.append(kv.desc(i, kv.WD_OP_DEFLATE, zq.src + off, n, zq.dst + i * room,
                                 room, flags=chain_flags(i, len(ps)), stream=2))
        q.submit(descs)
        cqes = q.reap(len(descs))
        assert all(c.status == 0 and not c.flags for c in cqes), cqes
        assert [c.tag for c in cqes if c.tag < 100] == list(range(len(ps)))
        out = b"".join(zq.dm[i * room:i * room + c.out_len]
                       for i, c in enumerate(c for c in cqes if c.tag < 100))
        assert zlib.decompress(out) == comp


# -- stream lifetime and memory --------------------------------------------------------
def stream_source(q, data):
    """A Zq whose buffer holds a zlib stream of data (at 0), then data."""
    z = zlib.compress(data)
    zq = Zq(q, z + data, 1 << 16)
    zq.zlen = len(z)
    return zq


def start_streams(q, zq, n, opcode=kv.WD_OP_DEFLATE, first_slot=0):
    """First pieces (64 bytes, MORE) in slots first_slot.. of q."""
    src = zq.src if opcode == kv.WD_OP_INFLATE else zq.src + zq.zlen
    assert zq.zlen > 64  # an inflate stream does not end in its first piece
    for slot in range(first_slot, first_slot + n):
        c = q.run(opcode, src, 64, zq.dst, zq.cap, flags=MORE, stream=slot)
        assert (c.status, c.flags) == (0, 0), c


def test_streams_are_freed_on_close_reset_and_death():
    data = compressible(4096, 1)
    assert kv.dummy_dbg(DEV, "streams") == 0
    assert kv.dummy_dbg(DEV, "stream_bytes") == 0
    with kv.Queue(DEV, "zlib") as q:
        zq = stream_source(q, data)
        start_streams(q, zq, 1)
        per_deflate = kv.dummy_dbg(DEV, "stream_bytes")
        start_streams(q, zq, 1, kv.WD_OP_INFLATE, first_slot=1)
        per_inflate = kv.dummy_dbg(DEV, "stream_bytes") - per_deflate
        assert per_deflate > per_inflate > 0
        start_streams(q, zq, 3, first_slot=2)
        assert kv.dummy_dbg(DEV, "streams") == 5
        assert kv.dummy_dbg(DEV, "stream_bytes") == 4 * per_deflate + per_inflate
        kv.ioctl(q.dev, kv.VFIO_DEVICE_RESET)
        q.sq_tail = q.cq_head = 0
        assert kv.dummy_dbg(DEV, "streams") == 0
        c = q.run(kv.WD_OP_DEFLATE, zq.src, 64, zq.dst, zq.cap, flags=CONT, stream=0)
        assert c.status == kv.WD_STS_BAD_CHAIN
        start_streams(q, zq, 2)
        assert kv.dummy_dbg(DEV, "streams") == 2
    assert kv.dummy_dbg(DEV, "streams") == 0
    # A process that dies mid-stream leaves nothing behind.
    u = kv.create_mdev(DEV, "zlib")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            q = kv.Queue(mdev=u)
            start_streams(q, stream_source(q, data), 4)
            os.write(w, b"x")
            time.sleep(120)
        finally:
            os._exit(1)
    os.close(w)
    try:
        assert os.read(r, 1) == b"x"
        assert kv.dummy_dbg(DEV, "streams") == 4
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
    assert kv.dummy_dbg(DEV, "streams") == 0
    assert kv.dummy_dbg(DEV, "stream_bytes") == 0
    kv.remove_mdev(u)


def test_stream_memory_is_bounded_per_device():
    data = compressible(4096, 2)
    with kv.Queue(DEV, "zlib") as q, kv.Queue(DEV, "zlib") as q2:
        zq, zq2 = stream_source(q, data), stream_source(q2, data)
        start_streams(q, zq, 1)
        per = kv.dummy_dbg(DEV, "stream_bytes")
        with kv.Param("stream_mem_kb", (3 * per + 1023) // 1024):
            start_streams(q, zq, 1, first_slot=1)
            start_streams(q2, zq2, 1)  # the bound is the device's, across queues
            c = q2.run(kv.WD_OP_DEFLATE, zq2.src, 64, zq2.dst, zq2.cap, flags=MORE, stream=1)
            assert (c.status, c.out_len, c.result, c.flags) == (kv.WD_STS_NOMEM, 0, 0, 0)
            c = q2.run(kv.WD_OP_DEFLATE, zq2.src, 64, zq2.dst, zq2.cap, flags=CONT, stream=1)
            assert c.status == kv.WD_STS_BAD_CHAIN  # nothing was started
            assert kv.dummy_dbg(DEV, "streams") == 3
            # Ending a stream makes room.
            c = q.run(kv.WD_OP_DEFLATE, zq.src, 64, zq.dst, zq.cap, flags=CONT, stream=0)
            assert (c.status, c.flags) == (0, 0)
            start_streams(q2, zq2, 1, first_slot=1)
    assert kv.dummy_dbg(DEV, "streams") == 0


def test_hdr_max_streams():
    for tname, want in (("zlib", int(kv.param("max_streams"))), ("zlib-weak", int(kv.param("max_streams"))),
                        ("sha256", 0), ("crc32c", 0), ("memcpy", 0)):
        with kv.Queue(DEV, tname) as q:
            assert q.max_streams == want, tname
