"""The fuzzer's phases (engine: wd_fuzz.py): malformed descriptors, ring indices, region
reads and writes, VFIO ioctls, mmap, writable sysfs/debugfs/parameter files and mdev
create/remove, against the real modules.

Each phase is one test and runs $WD_FUZZ_INPUTS inputs (default: PHASE_INPUTS, over
10,000 in all) plus the corpus of inputs that once broke something.  An input passes when
its answer is one the contract allows (the header's statuses and errnos, each request
completing exactly once) and the kernel log shows no splat.  After each phase: good
requests of every algorithm still verify against independent references, no page is
pinned and every queue is back in the pool (available_instances as before)."""
import ctypes
import errno
import hashlib
import mmap
import os
import struct
import sys
import uuid as uuidlib
import zlib

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402
import wd_fuzz  # noqa: E402

PHASE_INPUTS = {
    "desc": 3400, "ring": 600, "region": 1500, "ioctl": 2400,
    "mmap": 1200, "sysfs": 800, "mdev": 600,
}
# Under KASAN in a TCG guest a phase takes minutes: every phase gets this limit (times
# --guest-timeout-scale).
PHASE_LIMIT = 300
SCALE = float(os.environ.get("WD_TIMEOUT_SCALE", "1"))
REAP_TIMEOUT = 30.0 * SCALE
PARENT = "wd_dummy.0"
BUF_LEN = 64 << 10
PAGE = mmap.PAGESIZE
U32, U64 = (1 << 32) - 1, (1 << 64) - 1
STATUSES = {v for k, v in vars(kv).items() if k.startswith("WD_STS_")}
# Types whose queues the descriptor phase drives: every algorithm, weak order, SVA.
DESC_TYPES = ("memcpy", "crc32c", "sha256", "zlib", "crc32c-weak", "zlib-weak",
              "sha256-sva", "memcpy-sva")
OPCODES = {"memcpy": {kv.WD_OP_MEMCPY}, "crc32c": {kv.WD_OP_CRC32C},
           "sha256": {kv.WD_OP_SHA256}, "zlib": {kv.WD_OP_DEFLATE, kv.WD_OP_INFLATE}}

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.mremap.restype = ctypes.c_void_p
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]
MAP_FAILED = ctypes.c_void_p(-1).value
MREMAP_MAYMOVE = 1


def check(cond, what):
    if not cond:
        raise wd_fuzz.Violation(what)


def algo_of(tname):
    return tname.split("-", 1)[0]


def pool_state():
    """available_instances of every type of every device."""
    out = {}
    for p in kv.parents():
        base = f"{kv.MDEV_BUS}/{p}/mdev_supported_types"
        for t in os.listdir(base):
            out[f"{p}/{t}"] = kv.read(f"{base}/{t}/available_instances")
    return out


# --------------------------------------------------------------------------- good requests


def verify_good_requests(parent=PARENT):
    """One request of every algorithm, each checked against an independent reference."""
    data = os.urandom(5000) + b"wrapdrive" * 300
    with kv.Queue(parent, "crc32c") as q:
        m, iova, _ = q.dma_buffer(len(data), data)
        c = q.run(kv.WD_OP_CRC32C, iova, len(data), tag=11)
        check(c.status == 0 and c.result == kv.kernel_crc32c(data), f"crc32c: {c}")
    with kv.Queue(parent, "sha256") as q:
        m, iova, _ = q.dma_buffer(len(data) + 64, data)
        c = q.run(kv.WD_OP_SHA256, iova, len(data), iova + len(data), 32, tag=12)
        got = bytes(m[len(data):len(data) + 32])
        check(c.status == 0 and got == hashlib.sha256(data).digest(), f"sha256: {c}")
    with kv.Queue(parent, "memcpy") as q:
        m, iova, _ = q.dma_buffer(2 * len(data), data)
        c = q.run(kv.WD_OP_MEMCPY, iova, len(data), iova + len(data), len(data), tag=13)
        check(c.status == 0 and bytes(m[len(data):2 * len(data)]) == data, f"memcpy: {c}")
    with kv.Queue(parent, "zlib") as q:
        bound = kv.abi.deflate_bound(len(data))
        m, iova, _ = q.dma_buffer(len(data) + bound, data)
        c = q.run(kv.WD_OP_DEFLATE, iova, len(data), iova + len(data), bound, tag=14)
        out = bytes(m[len(data):len(data) + c.out_len])
        check(c.status == 0 and zlib.decompress(out) == data, f"deflate: {c}")
    with kv.Queue(parent, "memcpy-sva") as q:
        src = ctypes.create_string_buffer(data, len(data))
        dst = ctypes.create_string_buffer(len(data))
        c = q.run(kv.WD_OP_MEMCPY, ctypes.addressof(src), len(data), ctypes.addressof(dst),
                  len(data), tag=15)
        check(c.status == 0 and dst.raw == data, f"sva memcpy: {c}")


class Phase:
    """Before/after bookkeeping of one phase: the pool, pins, good requests."""

    def __init__(self):
        self.pool = pool_state()

    def after(self, stats):
        verify_good_requests()
        assert kv.dbg("pinned_pages") == 0, "pages left pinned after the phase"
        assert pool_state() == self.pool, "queues not back in the pool"
        assert set(os.listdir(kv.MDEV_DEVICES)) == set(), "mdevs left after the phase"
        total = stats["inputs"] + stats["corpus"]
        print(f"[fuzz] after the phase: good requests verify, 0 pages pinned, pool whole "
              f"({total} inputs)")


def phase(name, gen, setup, execute, teardown):
    p = Phase()
    stats = wd_fuzz.run_phase(name, wd_fuzz.inputs_per_phase(PHASE_INPUTS[name]),
                              gen, setup, execute, teardown)
    p.after(stats)
    return stats


# --------------------------------------------------------------------------- values

def pick(rng, *choices):
    return rng.choice(choices)


def u32(rng):
    return pick(rng, 0, 1, 2, 3, 4, 31, 32, 33, 63, 64, 4095, 4096, 4097, 65535, 65536,
                kv.WD_MAX_LEN - 1, kv.WD_MAX_LEN, kv.WD_MAX_LEN + 1, 1 << 31, U32 - 1, U32,
                rng.randrange(1 << 32), rng.randrange(1 << 16))


def addr_spec(rng):
    kind = pick(rng, "A", "A", "A", "A", "R", "Z", "U", "W", "H", "Q", "D", "C")
    if kind == "A":
        return ["A", pick(rng, 0, 1, 64, 4095, 4096, BUF_LEN - 64, BUF_LEN - 1, BUF_LEN,
                          rng.randrange(BUF_LEN))]
    if kind == "R":
        return ["R", pick(rng, 0, 100, PAGE - 32, PAGE)]
    if kind == "W":
        return ["W", pick(rng, 1, 64, PAGE, rng.randrange(1 << 20))]
    if kind == "H":
        return ["H", rng.randrange(1 << 64)]
    if kind == "U":
        return ["U", pick(rng, -PAGE, -1, BUF_LEN + PAGE, 1 << 30, 1 << 47)]
    return [kind, pick(rng, 0, 8, PAGE - 16)]


def gen_desc(rng):
    """A batch of descriptors for one queue, mostly near-valid, each field sometimes wild."""
    tname = rng.choice(DESC_TYPES)
    algo = algo_of(tname)
    descs = []
    for _ in range(rng.randint(1, 8)):
        own = sorted(OPCODES[algo])
        opcode = pick(rng, kv.WD_OP_NOP, *own, *own, *own, rng.randrange(8),
                      rng.randrange(1 << 16))
        flags = pick(rng, 0, 0, 0, kv.WD_DF_MORE, kv.WD_DF_CONT,
                     kv.WD_DF_MORE | kv.WD_DF_CONT, 4, rng.randrange(1 << 16))
        d = dict(opcode=opcode, flags=flags, src=addr_spec(rng), dst=addr_spec(rng),
                 src_len=pick(rng, *([rng.randrange(BUF_LEN)] * 3), u32(rng)),
                 dst_len=pick(rng, *([rng.randrange(BUF_LEN)] * 3), u32(rng)),
                 ctx=addr_spec(rng), seed=rng.randrange(1 << 32),
                 stream=pick(rng, 0, 0, 1, 3, 4, 15, 16, 255, rng.randrange(1 << 16)),
                 level=pick(rng, 0, 1, 6, 9, 10, 11, rng.randrange(256)),
                 flush=pick(rng, 0, 0, 1, 2, 3, rng.randrange(256)),
                 rsvd=pick(rng, 0, 0, 0, 0, 0, 0, 0, 1, rng.randrange(1 << 64)))
        descs.append(d)
    prefill = pick(rng, None, None, None, "zlib", "sha_ctx", "random")
    return {"q": tname, "descs": descs, "prefill": prefill, "pseed": rng.randrange(1 << 32)}


class DescCtx:
    def __init__(self):
        self.queues = {}
        self.mem = {}
        for t in DESC_TYPES:
            q = kv.Queue(PARENT, t)
            self.queues[t] = q
            if q.capa & kv.WD_CAPA_SHARE_ALL:
                a = mmap.mmap(-1, BUF_LEN)
                r = mmap.mmap(-1, PAGE, prot=mmap.PROT_READ)
                q.maps += [a, r]
                self.mem[t] = (a, _ro_addr(a), _ro_addr(r))
            else:
                a, iova, _ = q.dma_buffer(BUF_LEN)
                _, riova, _ = q.dma_buffer(PAGE, read_only=True)
                self.mem[t] = (a, iova, riova)


def _ro_addr(m):
    """The address of an mmap's memory (ctypes refuses from_buffer on a read-only one)."""
    ptr = ctypes.c_void_p()
    ctypes.pythonapi.PyObject_GetBuffer.argtypes = [ctypes.py_object, ctypes.c_void_p,
                                                    ctypes.c_int]

    class Py_buffer(ctypes.Structure):  # noqa: N801  (CPython's name)
        _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.py_object),
                    ("len", ctypes.c_ssize_t), ("itemsize", ctypes.c_ssize_t),
                    ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                    ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p),
                    ("strides", ctypes.c_void_p), ("suboffsets", ctypes.c_void_p),
                    ("internal", ctypes.c_void_p)]
    view = Py_buffer()
    ctypes.pythonapi.PyObject_GetBuffer(m, ctypes.byref(view), 0)
    ptr.value = view.buf
    ctypes.pythonapi.PyBuffer_Release.argtypes = [ctypes.c_void_p]
    ctypes.pythonapi.PyBuffer_Release(ctypes.byref(view))
    return ptr.value


def resolve(spec, q, base, rbase):
    kind, v = spec
    region_va = {"Q": q.sq, "D": q.db, "C": q.cqr}
    if kind == "A":
        return (base + v) & U64
    if kind == "R":
        return (rbase + v) & U64
    if kind == "Z":
        return v
    if kind == "U":
        return (base + v) & U64
    if kind == "W":
        return (-v) & U64
    if kind == "H":
        return v
    return (_ro_addr(region_va[kind]) + v) & U64


def prefill(ctx, t, how, pseed):
    a = ctx.mem[t][0]
    if how == "zlib":
        data = (b"%d" % pseed) * 97
        z = zlib.compress(data)
        a[:len(z)] = z
    elif how == "sha_ctx":
        kv.SHA_CTX.pack_into(a, 0, magic=kv.WD_SHA256_CTX_MAGIC, total=pseed % 200)
    elif how == "random":
        a[:4096] = os.urandom(4096)


def exec_desc(inp, ctx):
    t = inp["q"]
    q = ctx.queues[t]
    a, base, rbase = ctx.mem[t]
    if inp["prefill"]:
        prefill(ctx, t, inp["prefill"], inp["pseed"])
    descs = []
    for n, d in enumerate(inp["descs"]):
        descs.append(dict(tag=0xF0000000 | n, opcode=d["opcode"], flags=d["flags"],
                          src=resolve(d["src"], q, base, rbase),
                          dst=resolve(d["dst"], q, base, rbase),
                          src_len=d["src_len"], dst_len=d["dst_len"],
                          ctx=resolve(d["ctx"], q, base, rbase), seed=d["seed"],
                          stream=d["stream"], level=d["level"], flush=d["flush"],
                          __rsvd=d["rsvd"]))
    q.submit(descs)
    try:
        cqes = q.reap(len(descs), timeout=REAP_TIMEOUT)
    except TimeoutError as e:
        raise wd_fuzz.Violation(f"requests lost: {e}") from None
    algo = algo_of(t)
    seen = set()
    for c in cqes:
        n = c.tag & 0xFF
        check(c.tag & ~0xFF == 0xF0000000 and n < len(descs) and n not in seen,
              f"completion with a tag never submitted or twice: {c}")
        seen.add(n)
        d = inp["descs"][n]
        check(c.status in STATUSES, f"unknown status {c.status}: {c}")
        if c.status != kv.WD_STS_OK:
            check(c.out_len == 0 and c.result == 0, f"failed request with out_len/result: {c}")
        if d["opcode"] != kv.WD_OP_NOP and d["opcode"] not in OPCODES[algo]:
            check(c.status == kv.WD_STS_BAD_OPCODE, f"opcode {d['opcode']} on {t}: {c}")
        elif d["rsvd"]:
            check(c.status == kv.WD_STS_BAD_FLAGS, f"reserved word set: {c}")
        if c.status == kv.WD_STS_OK and d["opcode"] == kv.WD_OP_MEMCPY:
            check(c.out_len == d["src_len"], f"memcpy out_len: {c}")
        if c.status == kv.WD_STS_OK and (d["src_len"] > kv.WD_MAX_LEN
                                          or d["dst_len"] > kv.WD_MAX_LEN):
            raise wd_fuzz.Violation(f"length over WD_MAX_LEN accepted: {c}")
    check(not q.status() & kv.WD_Q_DEAD, "queue died")


def teardown_queues(ctx):
    for q in ctx.queues.values():
        q.close()
    return {}


@pytest.mark.slow(PHASE_LIMIT)
def test_fuzz_descriptors():
    phase("desc", gen_desc, DescCtx, exec_desc, teardown_queues)


# --------------------------------------------------------------------------- ring indices

RING_TYPES = ("crc32c", "zlib", "sha256-weak")


def idx_spec(rng):
    return pick(rng, ["abs", rng.randrange(1 << 32)], ["ahead", pick(rng, 1, 8, 1023, 1024,
                1025, 2048, 1 << 31, U32)], ["back", pick(rng, 1, 2, 1024, 1 << 31)],
                ["abs", 0], ["abs", U32])


def gen_ring(rng):
    ops = []
    for _ in range(rng.randint(1, 6)):
        ops.append([pick(rng, "sq_tail", "sq_tail", "cq_head", "irq", "kick", "kick",
                         "fill"), idx_spec(rng)])
    return {"q": rng.choice(RING_TYPES), "ops": ops,
            "recover": pick(rng, "reset", "sane", "sane")}


class RingCtx:
    def __init__(self):
        self.queues = {}
        self.mem = {}
        for t in RING_TYPES:
            q = kv.Queue(PARENT, t)
            self.queues[t] = q
            m, iova, _ = q.dma_buffer(BUF_LEN, os.urandom(BUF_LEN))
            self.mem[t] = iova
            fill_nops(q)


def fill_nops(q):
    for slot in range(q.entries):
        kv.DESC.pack_into(q.sq, slot * kv.DESC.size, tag=0xE0000000 | slot,
                          opcode=kv.WD_OP_NOP)


def hdr(q, field):
    return struct.unpack_from("<I", q.cqr, kv.HDR.fields[field][0])[0]


def index_value(spec, q):
    kind, v = spec
    if kind == "abs":
        return v & U32
    head = hdr(q, "sq_head")
    return (head + v) & U32 if kind == "ahead" else (head - v) & U32


def reset(q):
    kv.ioctl(q.dev, kv.VFIO_DEVICE_RESET)
    q.sq_tail = q.cq_head = 0
    check(hdr(q, "sq_head") == 0 and q.cq_tail() == 0, "indices not 0 after reset")


def nop_round_trip(q, tag=0xFEED):
    q.submit([kv.desc(tag, kv.WD_OP_NOP)])
    end = kv.time.monotonic() + REAP_TIMEOUT
    while True:
        try:
            c = q.reap(1, timeout=max(0.1, end - kv.time.monotonic()))[0]
        except TimeoutError:
            raise wd_fuzz.Violation("a good request after the input never completed") from None
        if c.tag == tag:
            check(c.status == 0, f"NOP failed: {c}")
            return


def exec_ring(inp, ctx):
    q = ctx.queues[inp["q"]]
    mask = q.entries - 1
    for kind, spec in inp["ops"]:
        v = index_value(spec, q)
        if kind == "sq_tail":
            kv.store32(q.db, kv.DB_SQ_TAIL, v)
        elif kind == "cq_head":
            kv.store32(q.db, kv.DB_CQ_HEAD, v)
        elif kind == "irq":
            kv.store32(q.db, kv.DB_IRQ_REQUEST, v)
        elif kind == "kick":
            os.pwrite(q.dev, struct.pack("<I", v), q.regions[kv.WD_REGION_DOORBELL][2])
        else:  # fill: good crc32c requests in the slots from sq_head on, then tail
            head = hdr(q, "sq_head")
            for k in range(v % 16):
                kv.DESC.pack_into(q.sq, ((head + k) & mask) * kv.DESC.size,
                                  **kv.desc(0xE1000000 | k, kv.WD_OP_CRC32C,
                                            ctx.mem[inp["q"]], 4096 * (k + 1)))
    check(not q.status() & kv.WD_Q_DEAD, "queue died")
    if inp["recover"] == "reset":
        reset(q)
        fill_nops(q)
        nop_round_trip(q)
        return
    # A sane state again without a reset: consume every completion, then the
    # tail right after what the device took.
    end = kv.time.monotonic() + REAP_TIMEOUT
    prev = None
    while True:  # let the device finish whatever garbage it took
        cur = (hdr(q, "sq_head"), q.cq_tail())
        if cur == prev:
            break
        prev = cur
        kv.time.sleep(0.01)
        check(kv.time.monotonic() < end, "the device never settled")
    head, tail = prev
    q.cq_head = tail
    kv.store32(q.db, kv.DB_CQ_HEAD, tail)
    q.sq_tail = head
    kv.DESC.pack_into(q.sq, (head & mask) * kv.DESC.size, **kv.desc(0xFEED, kv.WD_OP_NOP))
    q.sq_tail = (head + 1) & U32
    kv.store32(q.db, kv.DB_SQ_TAIL, q.sq_tail)
    q.kick()
    try:
        cqes = q.reap(1, timeout=REAP_TIMEOUT)
    except TimeoutError:
        raise wd_fuzz.Violation("a sane tail after garbage was never served") from None
    check(cqes[0].tag == 0xFEED and cqes[0].status == 0, f"after garbage: {cqes[0]}")


@pytest.mark.slow(PHASE_LIMIT)
def test_fuzz_ring_indices():
    phase("ring", gen_ring, RingCtx, exec_ring, teardown_queues)


# --------------------------------------------------------------------------- region reads/writes

REGION_TYPES = ("crc32c", "sha256-sva")


def gen_region(rng):
    index = pick(rng, 0, 1, 2, 0, 1, 2, 3, 4, 255, rng.randrange(1 << 23))
    off = pick(rng, ["abs", 0], ["abs", 4], ["abs", 1], ["abs", 0x40], ["abs", 0x80],
               ["end", 0], ["end", -4], ["end", -1], ["end", 4], ["abs", rng.randrange(1 << 20)],
               ["abs", (1 << 40) - 4])
    count = pick(rng, 0, 1, 2, 3, 4, 8, 64, 4096, 4097, rng.randrange(1 << 17))
    return {"q": rng.choice(REGION_TYPES),
            "op": pick(rng, "read", "write", "write", "mwrite", "mread"),
            "index": index, "off": off, "count": count, "byte": rng.randrange(256)}


def region_size(q, index):
    return q.regions[index][1] if index < kv.WD_NUM_REGIONS else 0


def region_offset(q, index):
    shift = (q.regions[1][2] - q.regions[0][2]).bit_length() - 1
    return index << shift


def expected_rw(q, index, off, count, write):
    """The errno the contract gives a pread/pwrite, or 0."""
    if index >= kv.WD_NUM_REGIONS:
        return errno.EINVAL
    size = region_size(q, index)
    if off >= size or count > size - off:
        return errno.EINVAL
    if write and index == kv.WD_REGION_CQ:
        return errno.EINVAL
    if write and index == kv.WD_REGION_DOORBELL and (off | count) & 3:
        return errno.EINVAL
    return 0


def exec_region(inp, ctx):
    q = ctx.queues[inp["q"]]
    index, (kind, v), count = inp["index"], inp["off"], inp["count"]
    op = inp["op"]
    if op in ("mwrite", "mread"):
        m = (q.db, q.sq, q.cqr)[index % 3]
        off = (v if kind == "abs" else len(m) + v) % len(m)
        count = min(count, len(m) - off)
        if op == "mread" or m is q.cqr:
            sum(m[off:off + count])
        else:
            m[off:off + count] = bytes([inp["byte"]]) * count
            if m is q.db:
                reset(q)
        nop_round_trip(q)
        return
    size = region_size(q, index) if index < kv.WD_NUM_REGIONS else 0
    off = v if kind == "abs" else size + v
    if off < 0:
        return
    pos = region_offset(q, index) + off
    if pos >= 1 << 63:
        return
    write = op == "write"
    want = expected_rw(q, index, off, count, write)
    try:
        if write:
            got = os.pwrite(q.dev, bytes([inp["byte"]]) * count, pos)
        else:
            got = len(os.pread(q.dev, count, pos))
        err = 0
    except OSError as e:
        err, got = e.errno, -1
    if count == 0 and want == 0:
        check(err in (0, errno.EINVAL), f"0-byte access: errno {err}")
    else:
        check(err == want, f"errno {err}, the contract says {want}")
        if not err:
            check(got == count, f"{got} bytes of {count}")
    if write and index == kv.WD_REGION_DOORBELL and not err:
        reset(q)
    nop_round_trip(q)


@pytest.mark.slow(PHASE_LIMIT)
def test_fuzz_region_reads_and_writes():
    phase("region", gen_region, lambda: RingCtxFor(REGION_TYPES), exec_region, teardown_queues)


class RingCtxFor:
    def __init__(self, types):
        self.queues = {t: kv.Queue(PARENT, t) for t in types}


# --------------------------------------------------------------------------- ioctls

DEV_CMDS = ("VFIO_DEVICE_GET_INFO", "VFIO_DEVICE_GET_REGION_INFO", "VFIO_DEVICE_GET_IRQ_INFO",
            "VFIO_DEVICE_SET_IRQS", "VFIO_DEVICE_SET_IRQS", "VFIO_DEVICE_SET_IRQS",
            "VFIO_DEVICE_RESET", "raw")
CONTAINER_CMDS = ("VFIO_IOMMU_MAP_DMA", "VFIO_IOMMU_UNMAP_DMA", "VFIO_IOMMU_GET_INFO",
                  "VFIO_CHECK_EXTENSION")
GROUP_CMDS = ("VFIO_GROUP_GET_STATUS", "VFIO_GROUP_GET_DEVICE_FD", "VFIO_GROUP_UNSET_CONTAINER")
IOCTL_BUF = 1 << 16


def gen_ioctl(rng):
    target = pick(rng, "dev", "dev", "dev", "container", "container", "group")
    cmd = rng.choice({"dev": DEV_CMDS, "container": CONTAINER_CMDS, "group": GROUP_CMDS}[target])
    irq_flags = pick(rng, kv.VFIO_IRQ_SET_DATA_NONE, kv.VFIO_IRQ_SET_DATA_BOOL,
                     kv.VFIO_IRQ_SET_DATA_EVENTFD) | pick(
        rng, kv.VFIO_IRQ_SET_ACTION_MASK, kv.VFIO_IRQ_SET_ACTION_UNMASK,
        kv.VFIO_IRQ_SET_ACTION_TRIGGER)
    return {
        "target": target, "cmd": cmd,
        "raw": pick(rng, rng.randrange(1 << 32), (0x3B << 8) | rng.randrange(100, 140)),
        "argsz": pick(rng, 0, 1, 4, 8, 16, 20, 23, 24, 31, 32, 33, 4096, IOCTL_BUF, U32,
                      rng.randrange(1 << 32)),
        "flags": pick(rng, irq_flags, irq_flags, 0, 1, 2, 3, 4, 7, rng.randrange(1 << 32)),
        "index": pick(rng, 0, 0, 1, 2, 3, 4, U32, rng.randrange(1 << 32)),
        "start": pick(rng, 0, 0, 1, U32),
        "count": pick(rng, 0, 1, 1, 2, U32, rng.randrange(1 << 32)),
        "fd": pick(rng, "eventfd", "eventfd", -1, -2, 0, 999, "devfd"),
        "bool": pick(rng, 0, 1, 255),
        "iova": pick(rng, 0, 1 << 20, (1 << 20) + 4096, 1 << 40, U64 - 4095, rng.randrange(1 << 64)),
        "size": pick(rng, 0, 4096, 8192, 1 << 30, U64, rng.randrange(1 << 64)),
        "vaddr": pick(rng, "buf", "buf", 0, rng.randrange(1 << 64)),
        "name": pick(rng, "uuid", "", "x" * 300, "0", str(uuidlib.UUID(int=rng.randrange(1 << 128)))),
    }


class IoctlCtx:
    def __init__(self):
        self.q = kv.Queue(PARENT, "crc32c")
        self.efd = os.eventfd(0, os.EFD_NONBLOCK)
        self.buf = mmap.mmap(-1, 1 << 20)
        self.mem = ctypes.addressof(ctypes.c_char.from_buffer(self.buf))
        self.arg = ctypes.create_string_buffer(IOCTL_BUF)
        self.stats = {"errnos": {}}

    def close(self):
        self.q.close()
        os.close(self.efd)
        self.stats["errnos"] = dict(sorted(self.stats["errnos"].items()))
        return self.stats


def exec_ioctl(inp, ctx):
    q = ctx.q
    fd = {"dev": q.dev, "container": q.container, "group": q.group}[inp["target"]]
    cmd = inp["cmd"]
    req = inp["raw"] if cmd == "raw" else getattr(kv, cmd)
    a = ctx.arg
    ctypes.memset(a, 0, IOCTL_BUF)
    argsz = inp["argsz"]
    if cmd == "VFIO_DEVICE_SET_IRQS":
        fd_val = {"eventfd": ctx.efd, "devfd": q.dev}.get(inp["fd"], inp["fd"])
        data = (struct.pack("<i", fd_val) if inp["flags"] & kv.VFIO_IRQ_SET_DATA_EVENTFD
                else bytes([inp["bool"]]))
        raw = struct.pack("<IIIII", argsz, inp["flags"], inp["index"], inp["start"],
                          inp["count"]) + data * 4
    elif cmd == "VFIO_IOMMU_MAP_DMA":
        vaddr = ctx.mem if inp["vaddr"] == "buf" else inp["vaddr"]
        raw = struct.pack("<IIQQQ", argsz, inp["flags"] & 0xFFFF, vaddr, inp["iova"],
                          inp["size"])
    elif cmd == "VFIO_IOMMU_UNMAP_DMA":
        # Never the dirty bitmap: the kernel would write it wherever the input says.
        flags = inp["flags"] & ~kv.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP
        raw = struct.pack("<IIQQ", argsz, flags, inp["iova"], inp["size"])
    elif cmd == "VFIO_GROUP_GET_DEVICE_FD":
        name = q.uuid if inp["name"] == "uuid" else inp["name"]
        raw = name.encode() + b"\0"
    elif cmd in ("VFIO_CHECK_EXTENSION", "VFIO_DEVICE_RESET", "VFIO_GROUP_UNSET_CONTAINER"):
        raw = None
    elif cmd == "VFIO_IOMMU_GET_INFO":
        raw = struct.pack("<II", min(argsz, IOCTL_BUF), inp["flags"])  # written up to argsz
    else:
        raw = struct.pack("<IIII", argsz, inp["flags"], inp["index"], inp["count"])
    if raw is not None:
        ctypes.memmove(a, raw, len(raw))
    if raw is None:
        arg = inp["index"] if cmd == "VFIO_CHECK_EXTENSION" else 0
        ret = kv.libc.ioctl(fd, req, ctypes.c_void_p(arg))
    else:
        ret = kv.libc.ioctl(fd, req, ctypes.cast(a, ctypes.c_void_p))
    err = ctypes.get_errno() if ret < 0 else 0
    key = f"{cmd}:{errno.errorcode.get(err, err) if err else 'ok'}"
    ctx.stats["errnos"][key] = ctx.stats["errnos"].get(key, 0) + 1
    if cmd == "VFIO_GROUP_GET_DEVICE_FD" and ret >= 0:
        os.close(ret)
    if cmd == "VFIO_DEVICE_GET_REGION_INFO":
        want = errno.EINVAL if argsz < 32 or inp["index"] >= kv.WD_NUM_REGIONS else 0
        check(err == want, f"GET_REGION_INFO: errno {err}, want {want}")
        if not err:
            size, offset = struct.unpack_from("<QQ", a, 16)
            check((size, offset) == q.regions[inp["index"]][1:], "region info changed")
    if cmd in ("VFIO_DEVICE_GET_INFO", "VFIO_DEVICE_GET_IRQ_INFO"):
        minsz = 16
        want = errno.EINVAL if argsz < minsz else 0
        if cmd == "VFIO_DEVICE_GET_IRQ_INFO" and inp["index"] >= kv.WD_NUM_IRQS:
            want = errno.EINVAL
        check(err == want, f"{cmd}: errno {err}, want {want}")
    if cmd == "VFIO_DEVICE_RESET":
        check(err == 0, f"reset failed: errno {err}")
    if cmd in ("VFIO_DEVICE_RESET", "VFIO_DEVICE_SET_IRQS") or inp["target"] == "container":
        q.sq_tail = q.cq_head = 0
        if cmd != "VFIO_DEVICE_RESET":
            reset(q)
        nop_round_trip(q)
    check(not q.status() & kv.WD_Q_DEAD, "queue died")


@pytest.mark.slow(PHASE_LIMIT)
def test_fuzz_vfio_ioctls():
    phase("ioctl", gen_ioctl, IoctlCtx, exec_ioctl, lambda ctx: ctx.close())


# --------------------------------------------------------------------------- mmap

def gen_mmap(rng):
    return {
        "index": pick(rng, 0, 1, 2, 0, 1, 2, 3, 7),
        "off": pick(rng, 0, 0, 0, PAGE, 2 * PAGE, 1, 100, rng.randrange(1 << 30)),
        "len": pick(rng, PAGE, PAGE, "size", "size", "size+page", 0, 2 * PAGE, 1 << 30),
        "prot": pick(rng, mmap.PROT_READ, mmap.PROT_READ | mmap.PROT_WRITE, mmap.PROT_WRITE,
                     0, mmap.PROT_READ | mmap.PROT_EXEC),
        "flags": pick(rng, mmap.MAP_SHARED, mmap.MAP_SHARED, mmap.MAP_PRIVATE,
                      mmap.MAP_SHARED | 0x20000, 0),
        "post": [pick(rng, "touch", "write", "mprotect_w", "mremap_grow", "munmap_part",
                      "mprotect_r") for _ in range(rng.randint(0, 3))],
        "q": pick(rng, "crc32c", "sha256-sva"),
    }


def expected_mmap(q, inp, length):
    index, off, prot, flags = inp["index"], inp["off"], inp["prot"], inp["flags"]
    if length == 0 or off % PAGE or (flags & 3) not in (mmap.MAP_SHARED, mmap.MAP_PRIVATE):
        return errno.EINVAL
    if index >= kv.WD_NUM_REGIONS:
        return errno.EINVAL
    size = region_size(q, index)
    if off >= size or length > size - off:
        return errno.EINVAL
    if not flags & mmap.MAP_SHARED:
        return errno.EINVAL
    if index == kv.WD_REGION_CQ and prot & mmap.PROT_WRITE:
        return errno.EACCES
    return 0


def exec_mmap(inp, ctx):
    q = ctx.queues[inp["q"]]
    index = inp["index"]
    size = region_size(q, index) if index < kv.WD_NUM_REGIONS else PAGE
    length = {"size": size, "size+page": size + PAGE}.get(inp["len"], inp["len"])
    pos = region_offset(q, index) + inp["off"]
    addr = libc.mmap(None, length, inp["prot"], inp["flags"], q.dev, pos)
    err = ctypes.get_errno() if addr in (None, MAP_FAILED) else 0
    want = expected_mmap(q, inp, length)
    check(err == want, f"mmap: errno {err}, the contract says {want}")
    if err:
        return
    try:
        for op in inp["post"]:
            if op == "touch" and inp["prot"] & mmap.PROT_READ:
                for p in range(0, length, PAGE):
                    ctypes.c_uint8.from_address(addr + p).value  # noqa: B018  (the read)
            elif op == "write" and inp["prot"] & mmap.PROT_WRITE:
                ctypes.memset(addr, 0x5A, min(length, 256))
            elif op == "mprotect_w":
                r = libc.mprotect(addr, length, mmap.PROT_READ | mmap.PROT_WRITE)
                if index == kv.WD_REGION_CQ:
                    check(r != 0 and ctypes.get_errno() == errno.EACCES,
                          "the CQ became writable")
            elif op == "mprotect_r":
                libc.mprotect(addr, length, mmap.PROT_READ)
                inp = dict(inp, prot=mmap.PROT_READ)
            elif op == "mremap_grow":
                new = libc.mremap(addr, length, length + PAGE, MREMAP_MAYMOVE)
                check(new in (None, MAP_FAILED), "a region mapping grew")
            elif op == "munmap_part" and length > PAGE:
                check(libc.munmap(addr + PAGE, PAGE) != 0, "a region mapping was split")
    finally:
        check(libc.munmap(addr, length) == 0, "munmap failed")
    if index == kv.WD_REGION_DOORBELL or "write" in inp["post"]:
        reset(q)
        fill_nops(q)
    nop_round_trip(q)


@pytest.mark.slow(PHASE_LIMIT)
def test_fuzz_mmap():
    phase("mmap", gen_mmap, lambda: RingCtxFor(REGION_TYPES), exec_mmap, teardown_queues)


# --------------------------------------------------------------------------- sysfs, debugfs, parameters

PARAMS = "/sys/module/wd_dummy/parameters"
PARAM_BOUNDS = {"poll_idle_us": (0, 10**6), "poll_max_us": (0, 10**6),
                "stall_us": (1000, 60 * 10**6), "max_engines": (1, 4097),
                "stream_mem_kb": (0, 4 << 20)}


def writable_files():
    """Every file WrapDrive's modules let root write (and the read-only ones beside them:
    a write there must fail cleanly too)."""
    out = [f"{kv.MDEV_BUS}/{p}/priority" for p in kv.parents()]
    out += [f"{kv.MDEV_BUS}/{p}/numa_zone" for p in kv.parents()]
    out += [f"{PARAMS}/{n}" for n in sorted(os.listdir(PARAMS))]
    for root, _, files in os.walk(kv.DEBUGFS):
        out += [os.path.join(root, f) for f in files]
    return sorted(out)


def garbage(rng):
    kind = pick(rng, "bytes", "number", "number", "text", "bench")
    if kind == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(80)))
    if kind == "number":
        return pick(rng, b"-1", b"0", b"1", b"50", b"100", b"101", b"2147483648", b"4294967296",
                    b"18446744073709551616", b"0x10", b"+5", b" 5", b"5\n", b"5\0junk",
                    b"999999999999", b"-2147483649", b"", b"\n")
    if kind == "text":
        return pick(rng, b"Y", b"N", b"scan", b"clear", b"crc32c", b"x" * 4096, b"1 2 3")
    algo = pick(rng, b"crc32c", b"sha256", b"memcpy", b"zlib", b"lz4", b"")
    size = pick(rng, 0, 1, 4096, 65536, 16 << 20 | 1, 1 << 32)
    count = pick(rng, 0, 1, 2, 1000001)
    return b"%s %d %d" % (algo, size, count)


def gen_sysfs(rng):
    return {"file": rng.randrange(1 << 16), "data": garbage(rng).hex()}


class SysfsCtx:
    def __init__(self):
        self.files = writable_files()
        self.saved = {}
        for f in self.files:
            if (f.startswith(PARAMS) or f.endswith("/priority")) and os.stat(f).st_mode & 0o200:
                self.saved[f] = kv.read(f)
        self.stats = {"files": len(self.files), "accepted": 0, "refused": 0}

    def restore(self):
        for f, v in self.saved.items():
            kv.write(f, v)


def exec_sysfs(inp, ctx):
    path = ctx.files[inp["file"] % len(ctx.files)]
    data = bytes.fromhex(inp["data"])
    bench = path.endswith("/selfbench")
    if bench:  # a valid benchmark of many MiB would only cost time: keep it small
        parts = data.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit() and \
                int(parts[1]) * int(parts[2]) > (1 << 17) and int(parts[1]) <= kv.WD_MAX_LEN \
                and 0 < int(parts[2]) <= 1000000:
            data = b"%s %d 1" % (parts[0], min(int(parts[1]), 1 << 16))
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        check(e.errno in (errno.EACCES, errno.EPERM), f"open {path}: {e}")
        return
    try:
        os.write(fd, data)
        ok = True
        ctx.stats["accepted"] += 1
    except OSError as e:
        ok = False
        check(e.errno in (errno.EINVAL, errno.ERANGE, errno.EIO, errno.EPERM, errno.EACCES,
                          errno.ENOENT, errno.ENODEV, errno.EFAULT, errno.ENOMEM),
              f"write {path}: {e}")
        ctx.stats["refused"] += 1
    finally:
        os.close(fd)
    if path.startswith(PARAMS):
        name = os.path.basename(path)
        if name in PARAM_BOUNDS:
            lo, hi = PARAM_BOUNDS[name]
            v = int(kv.read(path))
            check(lo <= v <= hi, f"{name} = {v}, out of {lo}..{hi}")
    if path.endswith("/priority"):
        int(kv.read(path))
        check(not ok or b"\0" not in data, f"priority took {data!r}")
    ctx.restore()


@pytest.mark.slow(PHASE_LIMIT)
def test_fuzz_sysfs_debugfs_and_parameters():
    def teardown(ctx):
        ctx.restore()
        return ctx.stats
    phase("sysfs", gen_sysfs, SysfsCtx, exec_sysfs, teardown)


# --------------------------------------------------------------------------- mdev create/remove

MDEV_TYPES = ("crc32c", "sha256", "zlib", "memcpy-sva")


def gen_mdev(rng):
    ops = []
    for _ in range(rng.randint(1, 5)):
        ops.append({"op": pick(rng, "create", "create", "create_again", "remove", "remove",
                               "remove_again", "remove_garbage", "create_garbage"),
                    "type": rng.choice(MDEV_TYPES), "pick": rng.randrange(1 << 16),
                    "uuid": str(uuidlib.UUID(int=rng.randrange(1 << 128))),
                    "form": pick(rng, "plain", "plain", "upper", "newline", "braces",
                                 "short", "long", "nul"),
                    "value": pick(rng, "1", "0", "abc", "-1", "2", "1junk", "", "10000000000")})
    return {"ops": ops}


def uuid_form(u, form):
    return {"plain": u, "upper": u.upper(), "newline": u + "\n", "braces": "{" + u + "}",
            "short": u[:-1], "long": u + "0", "nul": u + "\0x"}[form]


class MdevCtx:
    def __init__(self):
        self.made = []
        self.stats = {"created": 0, "removed": 0, "refused": 0}


def exec_mdev(inp, ctx):
    for op in inp["ops"]:
        kind = op["op"]
        create = f"{kv.type_dir(PARENT, op['type'])}/create"
        if kind in ("create", "create_garbage"):
            u = op["uuid"]
            text = uuid_form(u, op["form"]) if kind == "create" else op["value"] + op["form"]
            valid = kind == "create" and op["form"] in ("plain", "upper", "newline")
            try:
                kv.write(create, text)
                ok = True
            except OSError as e:
                ok = False
                check(e.errno in (errno.EINVAL, errno.EEXIST), f"create {text!r}: {e}")
            if valid:
                if u in ctx.made:
                    check(not ok, f"uuid {u} created twice")
                else:
                    check(ok, f"create {text!r} refused")
            else:
                check(not ok or os.path.exists(f"{kv.MDEV_DEVICES}/{u}"),
                      f"garbage {text!r} accepted")
            if ok:
                ctx.made.append(u)
                ctx.stats["created"] += 1
            else:
                ctx.stats["refused"] += 1
        elif kind == "create_again" and ctx.made:
            u = ctx.made[op["pick"] % len(ctx.made)]
            try:
                kv.write(create, u)
                raise wd_fuzz.Violation(f"{u} created twice")
            except OSError as e:
                check(e.errno == errno.EEXIST, f"repeated uuid: {e}")
            ctx.stats["refused"] += 1
        elif kind in ("remove", "remove_again", "remove_garbage"):
            u = ctx.made[op["pick"] % len(ctx.made)] if ctx.made else op["uuid"]
            path = f"{kv.MDEV_DEVICES}/{u}/remove"
            value = op["value"] if kind == "remove_garbage" else "1"
            try:
                kv.write(path, value)
                ok = True
            except OSError as e:
                ok = False
                check(e.errno in (errno.EINVAL, errno.ENOENT, errno.ENODEV, errno.ERANGE),
                      f"remove {value!r}: {e}")
            if ok and u in ctx.made and not os.path.exists(f"{kv.MDEV_DEVICES}/{u}"):
                ctx.made.remove(u)
                ctx.stats["removed"] += 1
            if kind == "remove_again" and ok:
                check(not os.path.exists(path), "removed mdev still there")
        there = set(os.listdir(kv.MDEV_DEVICES))
        check(there == set(ctx.made), f"mdevs {sorted(there)} but made {sorted(ctx.made)}")
    # Every queue made is a real queue: open the newest and run a request.
    if ctx.made:
        with kv.Queue(mdev=ctx.made[-1]) as q:
            nop_round_trip(q)


def teardown_mdevs(ctx):
    for u in ctx.made:
        kv.remove_mdev(u)
    return ctx.stats


@pytest.mark.slow(PHASE_LIMIT)
def test_fuzz_mdev_create_and_remove():
    phase("mdev", gen_mdev, MdevCtx, exec_mdev, teardown_mdevs)


@pytest.fixture(autouse=True, scope="module")
def _print_totals():
    yield
    print(f"[fuzz] seed {wd_fuzz.seed()}")
