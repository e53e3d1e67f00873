"""Benchmarks of wd_dummy's engine, run inside a guest (not a test: figures from
an emulated guest are only good side by side).

  python tests/qemu/guest/engine_bench.py latency [--idle 4000]
      kick-to-completion latency of one queue (crc32c 64 B, the engine asleep
      before every request), with that queue alone and with --idle more idle
      open queues on the same device; then the same without the idle ones.
  python tests/qemu/guest/engine_bench.py placement [--runs 5]
      round trip and throughput with the caller unpinned, for several
      engine_cpus settings (the module is reloaded for each run).
  python tests/qemu/guest/engine_bench.py stream
      sha256 of 256 MiB and deflate of 64 MiB through chained requests,
      against one-shot requests and the engine's own rate (debugfs selfbench).
  python tests/qemu/guest/engine_bench.py userstream
      the same through the userlib's objects (wrapdrive.sha256, compressobj)
      reading a file, against the engine's own rate in the same boot.
  python tests/qemu/guest/engine_bench.py steps [--rounds 2]
      where the time of the public calls goes: each step of q.crc32c(64 B)
      and q.crc32c_many(64 x 64 B) alone, in ns; and sha256 of 64 KiB from
      C (wd_bench) with and without the staging copy, sleeping or spinning,
      one or several in flight, beside the engine's own rate.
      (build userlib/libwd/wd_bench first: make -C userlib/libwd wd_bench)

The ring is driven by a small C probe compiled here against kernel/uapi/wrapdrive.h.
"""
import argparse
import ctypes
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402

PROBE_C = r"""
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "wrapdrive.h"

struct wdb {
	int fd;
	uint64_t db_off;
	struct wd_doorbell *db;
	struct wd_ring_hdr *hdr;
	struct wd_cqe *cq;
	struct wd_desc *sq;
	uint32_t entries, sq_tail, cq_head;
	long kicks;
};

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
}

int wdb_open(struct wdb *q, int fd, uint64_t db_off, uint64_t cq_off,
		uint64_t cq_size, uint64_t sq_off, uint64_t sq_size)
{
	void *db = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, db_off);
	void *cq = mmap(NULL, cq_size, PROT_READ, MAP_SHARED, fd, cq_off);
	void *sq = mmap(NULL, sq_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, sq_off);

	if (db == MAP_FAILED || cq == MAP_FAILED || sq == MAP_FAILED)
		return -1;
	memset(q, 0, sizeof(*q));
	q->fd = fd;
	q->db_off = db_off;
	q->db = db;
	q->hdr = cq;
	q->cq = (struct wd_cqe *)((char *)cq + q->hdr->cq_off);
	q->sq = sq;
	q->entries = q->hdr->entries;
	return 0;
}

/* n copies of *d, one doorbell store, a kick if the engine sleeps. */
static void submit(struct wdb *q, const struct wd_desc *d, int n)
{
	for (int i = 0; i < n; i++)
		q->sq[q->sq_tail++ & (q->entries - 1)] = *d;
	__atomic_store_n(&q->db->sq_tail, q->sq_tail, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&q->hdr->status, __ATOMIC_RELAXED) & WD_Q_ENGINE_IDLE) {
		if (pwrite(q->fd, &q->sq_tail, 4, q->db_off) == 4)
			q->kicks++;
	}
}

/* Completions available now, each checked; -1 on a failed one. */
static int reap(struct wdb *q)
{
	int n = 0;

	while (__atomic_load_n(&q->hdr->cq_tail, __ATOMIC_ACQUIRE) != q->cq_head) {
		if (q->cq[q->cq_head & (q->entries - 1)].status)
			return -1;
		q->cq_head++;
		n++;
	}
	if (n)
		__atomic_store_n(&q->db->cq_head, q->cq_head, __ATOMIC_RELEASE);
	return n;
}

/*
 * n strict round trips; lat[i] in ns.  With asleep, each request waits for
 * the engine to have stopped polling the queue (WD_Q_ENGINE_IDLE), so each
 * one is kicked.  0, or -1 on error or a 10 s wait.
 */
int wdb_rtt(struct wdb *q, const struct wd_desc *d, int n, uint64_t *lat,
		int asleep)
{
	for (int i = 0; i < n; i++) {
		uint64_t t0 = now_ns();
		int got;

		while (asleep && !(__atomic_load_n(&q->hdr->status, __ATOMIC_ACQUIRE) &
					WD_Q_ENGINE_IDLE))
			if (now_ns() - t0 > 10000000000ull)
				return -1;
		t0 = now_ns();
		submit(q, d, 1);
		while (!(got = reap(q)))
			if (now_ns() - t0 > 10000000000ull)
				return -1;
		if (got < 0)
			return -1;
		lat[i] = now_ns() - t0;
	}
	return 0;
}

/* Keep up to `depth` requests in flight, refilled by `batch`, for `ns`:
 * completions, or -1. */
long wdb_stream(struct wdb *q, const struct wd_desc *d, int depth, int batch,
		uint64_t ns)
{
	uint64_t t0 = now_ns(), last = t0;
	long done = 0;

	while (now_ns() - t0 < ns) {
		int got;

		while ((int)(q->sq_tail - q->cq_head) + batch <= depth)
			submit(q, d, batch);
		got = reap(q);
		if (got < 0)
			return -1;
		if (got)
			last = now_ns();
		else if (now_ns() - last > 10000000000ull)
			return -1;
		done += got;
	}
	while (q->cq_head != q->sq_tail) {
		int got = reap(q);

		if (got < 0)
			return -1;
		if (got)
			last = now_ns();
		else if (now_ns() - last > 10000000000ull)
			return -1;
	}
	return done;
}

void wdb_close(struct wdb *q)
{
	munmap(q->db, 4096);
	munmap(q->hdr, (char *)q->cq - (char *)q->hdr + q->entries * sizeof(struct wd_cqe));
	munmap(q->sq, q->entries * sizeof(struct wd_desc));
}

long wdb_kicks(struct wdb *q)
{
	return q->kicks;
}
"""


class Wdb(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("db_off", ctypes.c_uint64)] + \
        [(n, ctypes.c_void_p) for n in ("db", "hdr", "cq", "sq")] + \
        [(n, ctypes.c_uint32) for n in ("entries", "sq_tail", "cq_head")] + \
        [("kicks", ctypes.c_long)]


_LIB = []


def probe_lib():
    if not _LIB:
        d = tempfile.mkdtemp()
        src, so = os.path.join(d, "wdb.c"), os.path.join(d, "wdb.so")
        with open(src, "w") as f:
            f.write(PROBE_C)
        subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-shared", "-fPIC",
                        "-I", os.path.dirname(kv.abi.UAPI), "-o", so, src], check=True)
        lib = ctypes.CDLL(so)
        lib.wdb_rtt.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p,
                                ctypes.c_int]
        lib.wdb_stream.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                   ctypes.c_uint64]
        lib.wdb_stream.restype = ctypes.c_long
        lib.wdb_kicks.restype = ctypes.c_long
        lib.wdb_open.argtypes = [ctypes.c_void_p, ctypes.c_int] + [ctypes.c_uint64] * 5
        _LIB.append(lib)
    return _LIB[0]


class Probe:
    """The C probe on an open kv.Queue (which it maps again)."""

    def __init__(self, q):
        self.lib = probe_lib()
        self.w = Wdb()
        r = q.regions
        if self.lib.wdb_open(ctypes.byref(self.w), q.dev, r[kv.WD_REGION_DOORBELL][2],
                             r[kv.WD_REGION_CQ][2], r[kv.WD_REGION_CQ][1],
                             r[kv.WD_REGION_SQ][2], r[kv.WD_REGION_SQ][1]):
            raise OSError("mmap failed")
        # The probe continues from where the Python side left the ring.
        self.w.sq_tail, self.w.cq_head = q.sq_tail, q.cq_head

    def rtt(self, desc, n, asleep=False):
        lat = (ctypes.c_uint64 * n)()
        if self.lib.wdb_rtt(ctypes.byref(self.w), kv.DESC.pack(**desc), n, lat, asleep):
            raise RuntimeError("round trip failed")
        return [x / 1000 for x in lat]  # us

    def stream(self, desc, depth, batch, seconds):
        done = self.lib.wdb_stream(ctypes.byref(self.w), kv.DESC.pack(**desc), depth, batch,
                                   int(seconds * 1e9))
        if done < 0:
            raise RuntimeError("stream failed")
        return done

    def close(self):
        """Unmap: a mapping would keep the queue's mdev from being removed."""
        self.lib.wdb_close(ctypes.byref(self.w))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def kicks(self):
        return self.lib.wdb_kicks(ctypes.byref(self.w))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def summary(lat):
    return (f"median {statistics.median(lat):7.1f} us  p10 {pct(lat, 10):7.1f}  "
            f"p90 {pct(lat, 90):7.1f}  (n={len(lat)})")


def crc_desc(q, size=64):
    _, src, _ = q.dma_buffer(size, os.urandom(size))
    return kv.desc(1, kv.WD_OP_CRC32C, src, size)


# -- latency: 1 vs N idle queues ---------------------------------------------------------
class IdleQueues:
    """n idle open queues of a device, sharing one container (2 fds each)."""

    def __init__(self, parent, n):
        self.uuids, self.fds = [], []
        self.container = os.open("/dev/vfio/vfio", os.O_RDWR)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4 * n + 1024), max(hard, 4 * n + 1024)))
        try:
            for i in range(n):
                u = kv.create_mdev(parent, "crc32c")
                self.uuids.append(u)
                grp = os.path.basename(os.readlink(f"{kv.MDEV_DEVICES}/{u}/iommu_group"))
                g = os.open(f"/dev/vfio/{grp}", os.O_RDWR)
                self.fds.append(g)
                kv.ioctl(g, kv.VFIO_GROUP_SET_CONTAINER, ctypes.pointer(ctypes.c_int(self.container)))
                if i == 0:
                    kv.ioctl(self.container, kv.VFIO_SET_IOMMU, kv.VFIO_TYPE1v2_IOMMU)
                self.fds.append(kv.ioctl(g, kv.VFIO_GROUP_GET_DEVICE_FD, ctypes.c_char_p(u.encode())))
        except BaseException:
            self.close()
            raise

    def close(self):
        for fd in reversed(self.fds):
            os.close(fd)
        os.close(self.container)
        for u in self.uuids:
            kv.remove_mdev(u)
        self.fds, self.uuids = [], []


def settle():
    """Wait for udev to finish with the mdevs' events: it competes for the CPUs."""
    t0 = time.monotonic()
    subprocess.run(["udevadm", "settle", "--timeout=900"], check=False)
    time.sleep(1)
    print(f"  (udev settled in {time.monotonic() - t0:.0f} s)", flush=True)


def engine_cpu(dev):
    """The first CPU the device's first engine thread may run on."""
    status = kv.read(f"/proc/{kv.engine_pids(dev)[0]}/status")
    allowed = status.split("Cpus_allowed_list:")[1].split()[0]
    return int(allowed.replace("-", ",").split(",")[0])


def latency(args):
    cpus = sorted(os.sched_getaffinity(0))
    dev = "wd_dummy.0"
    engine = engine_cpu(dev)
    if args.pin and len(cpus) > 1:
        os.sched_setaffinity(0, {c for c in cpus if c != engine} or set(cpus))
    print(f"engine of {dev} on CPU {engine}; caller on CPUs {sorted(os.sched_getaffinity(0))}")
    results = {}
    with kv.Param("poll_idle_us", 0), kv.Param("poll_max_us", 0), \
            kv.Queue(dev, "crc32c") as q, Probe(q) as p:
        d = crc_desc(q)
        p.rtt(d, 200)  # warm up

        def measure(label):
            k0 = p.kicks
            lat = p.rtt(d, args.n, asleep=True)
            results.setdefault(label, []).extend(lat)
            print(f"  {label:>22}: {summary(lat)}  kicks {p.kicks - k0}/{args.n}", flush=True)
            if args.verbose:
                print(subprocess.run(["ps", "-eo", "pid,pcpu,psr,stat,comm", "--sort=-pcpu"],
                                     capture_output=True, text=True).stdout[:600], flush=True)

        for _ in range(args.rounds):
            measure("alone")
            t0 = time.monotonic()
            idle = IdleQueues(dev, args.idle)
            print(f"  (opened {args.idle} idle queues in {time.monotonic() - t0:.0f} s)", flush=True)
            try:
                settle()
                measure(f"with {args.idle} idle")
            finally:
                t0 = time.monotonic()
                idle.close()
                print(f"  (closed them in {time.monotonic() - t0:.0f} s)", flush=True)
                settle()
    print("kick-to-completion latency, crc32c 64 B, engine asleep before each request:")
    for label, lat in results.items():
        print(f"  {label:>22}: {summary(lat)}")
    a, b = (statistics.median(v) for v in results.values())
    print(f"  ratio (with idle / alone): {b / a:.3f}")


# -- placement -----------------------------------------------------------------------------
def own_node_cpus():
    """engine_cpus putting each device's engine on the last CPU of its own node."""
    last = []
    for node in (0, 1):
        cpus = kv.read(f"/sys/devices/system/node/node{node}/cpulist")
        last.append(cpus.replace("-", ",").split(",")[-1])
    return "engine_cpus=" + ",".join(last)


PLACEMENTS = {
    "default": "",                        # engine_cpus' default
    "own-node": own_node_cpus(),          # the last CPU of the device's node
    "unpinned": "engine_cpus=-2,-2",      # the scheduler decides
}


def reload(params):
    subprocess.run(["rmmod", "wd_dummy"], check=True)
    subprocess.run(["insmod", f"{os.environ['WD_MODULE_DIR']}/wd_dummy.ko", *params.split()],
                   check=True)


def current_cpu():
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[36])


def node_of_cpu(cpu):
    for node in os.listdir("/sys/devices/system/node"):
        if node.startswith("node") and os.path.exists(f"/sys/devices/system/node/{node}/cpu{cpu}"):
            return int(node[4:])
    return 0


def one_placement_run(select, seconds):
    """One queue, caller unpinned: batch-1 round trip (engine polling) and throughput."""
    dev = "wd_dummy.0" if select == "priority" else f"wd_dummy.{node_of_cpu(current_cpu())}"
    out = {}
    with kv.Queue(dev, "crc32c") as q, Probe(q) as p:
        d = crc_desc(q)
        p.rtt(d, 100)
        k0 = p.kicks
        lat = p.rtt(d, 3000)
        out["rtt_us"] = statistics.median(lat)
        out["rtt_kicks"] = (p.kicks - k0) / 3000
        n = p.stream(d, 128, 64, seconds)
        out["crc_b64_ops"] = n / seconds
    with kv.Queue(dev, "sha256") as q, Probe(q) as p:
        size = 64 << 10
        _, src, _ = q.dma_buffer(size, os.urandom(size))
        _, dst, _ = q.dma_buffer(64)
        d = kv.desc(1, kv.WD_OP_SHA256, src, size, dst, 32)
        p.rtt(d, 5)
        n = p.stream(d, 8, 4, seconds)
        out["sha_64k_ops"] = n / seconds
    return out


def placement(args):
    rows = {name: [] for name in PLACEMENTS}
    try:
        for run in range(args.runs):
            for name, params in PLACEMENTS.items():
                reload(params)
                time.sleep(0.3)
                r = one_placement_run(args.select, args.seconds)
                rows[name].append(r)
                print(f"run {run} {name:>10}: " + "  ".join(f"{k} {v:.3g}" for k, v in r.items()),
                      flush=True)
    finally:
        reload("")
    print(f"\ncaller unpinned, device chosen by {args.select}; medians of {args.runs} runs:")
    keys = list(next(iter(rows.values()))[0])
    print(f"{'placement':>10} " + " ".join(f"{k:>12}" for k in keys))
    for name, rs in rows.items():
        print(f"{name:>10} " + " ".join(f"{statistics.median(r[k] for r in rs):12.4g}"
                                        for k in keys))


# -- streaming -------------------------------------------------------------------------------
def selfbench(algo, size, count):
    p = os.path.join(kv.DEBUGFS, "wd_dummy.0", "selfbench")
    kv.write(p, f"{algo} {size} {count}")
    return int(kv.read(p).split()[3]) / 1e9


HELD_BACK_ROOM = 1 << 20


def run_all(q, descs, timeout=600):
    """Submit everything (ring-sized batches), reap it all; seconds taken."""
    t0 = time.monotonic()
    for k in range(0, len(descs), q.entries):
        part = descs[k:k + q.entries]
        q.submit(part)
        for c in q.reap(len(part), timeout):
            assert c.status == 0 and not c.flags & kv.WD_CF_DST_FULL, c
    return time.monotonic() - t0


def stream(args):
    MORE, CONT = kv.WD_DF_MORE, kv.WD_DF_CONT
    MAX = kv.WD_MAX_LEN
    total = args.sha_mib << 20

    def flags(i, n):
        return (CONT if i else 0) | (MORE if i < n - 1 else 0)

    half = os.urandom(MAX // 2) + b"w" * (MAX // 2)  # selfbench's kind of data
    print(f"sha256 of {args.sha_mib} MiB (one 16 MiB buffer, pieces through it):")
    rates = {}
    for _ in range(args.rounds):
        with kv.Queue("wd_dummy.0", "sha256") as q:
            _, src, _ = q.dma_buffer(MAX, half)
            _, ctx, _ = q.dma_buffer(kv.SHA_CTX.size)
            _, dst, _ = q.dma_buffer(64)
            run_all(q, [kv.desc(0, kv.WD_OP_SHA256, src, MAX, dst, 32)])  # pin it once
            for piece in (MAX, 1 << 20, 64 << 10):
                n = total // piece
                per = MAX // piece
                ds = [kv.desc(i, kv.WD_OP_SHA256, src + (i % per) * piece, piece, dst, 32,
                              flags=flags(i, n), ctx=ctx) for i in range(n)]
                rates.setdefault(f"chained {piece >> 10} KiB pieces", []).append(
                    total / run_all(q, ds))
            ds = [kv.desc(i, kv.WD_OP_SHA256, src, MAX, dst, 32) for i in range(total // MAX)]
            rates.setdefault("one-shot 16 MiB", []).append(total / run_all(q, ds))
        rates.setdefault("engine (selfbench)", []).append(total / selfbench("sha256", MAX, total // MAX))
    engine = statistics.median(rates["engine (selfbench)"])
    for k, v in rates.items():
        m = statistics.median(v)
        print(f"  {k:>28}: {m / 2**20:8.1f} MiB/s  {m / engine:5.2f}x engine  (runs {len(v)})")

    print(f"deflate of {args.zlib_mib} MiB in 1 MiB pieces (default level):")
    zt = args.zlib_mib << 20
    piece = 1 << 20
    rates = {}
    for _ in range(args.rounds):
        with kv.Queue("wd_dummy.0", "zlib") as q:
            unit = half[:piece // 2] + half[-(piece // 2):]  # the mix, not only its random half
            _, src, _ = q.dma_buffer(piece, unit)
            # A chained piece may also carry what zlib held back from earlier ones (at
            # most about a block); room for that keeps WD_CF_DST_FULL, a continuation
            # this loop does not send, out of a throughput figure.
            cap = kv.abi.deflate_bound(piece) + HELD_BACK_ROOM
            _, dst, _ = q.dma_buffer(cap)
            n = zt // piece
            ds = [kv.desc(i, kv.WD_OP_DEFLATE, src, piece, dst, cap, flags=flags(i, n))
                  for i in range(n)]
            rates.setdefault("chained", []).append(zt / run_all(q, ds))
            ds = [kv.desc(i, kv.WD_OP_DEFLATE, src, piece, dst, cap) for i in range(n)]
            rates.setdefault("one-shot", []).append(zt / run_all(q, ds))
        rates.setdefault("engine (selfbench)", []).append(zt / selfbench("zlib", piece, n))
    engine = statistics.median(rates["engine (selfbench)"])
    for k, v in rates.items():
        m = statistics.median(v)
        print(f"  {k:>28}: {m / 2**20:8.1f} MiB/s  {m / engine:5.2f}x engine  (runs {len(v)})")


def userstream(args):
    """The userlib's streaming objects on a file (read in pieces, as the CLI
    does) against the engine's own rate (selfbench) in the same boot."""
    sys.path.insert(0, os.path.join(os.getcwd(), "userlib", "src"))
    import hashlib

    import wrapdrive
    from wrapdrive.chunks import read_pieces
    from wrapdrive.shared import close_shared

    MAX = kv.WD_MAX_LEN
    piece = 1 << 20
    unit = os.urandom(piece // 2) + b"w" * (piece // 2)  # selfbench's kind of data
    path = os.path.join(tempfile.mkdtemp(), "stream.bin")

    def make(mib):
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(unit)
        return mib << 20

    def through(total, fn):
        t0 = time.monotonic()
        with open(path, "rb") as f:
            for p in read_pieces(f):
                fn(p)
        return total / (time.monotonic() - t0)

    def report(title, rates):
        engine = statistics.median(rates["engine (selfbench)"])
        print(title)
        for k, v in rates.items():
            m = statistics.median(v)
            print(f"  {k:>34}: {m / 2**20:8.1f} MiB/s  {m / engine:5.2f}x engine  (runs {len(v)})")

    total = make(args.sha_mib)
    rates = {}
    for _ in range(args.rounds):
        h = wrapdrive.sha256()
        rates.setdefault("wrapdrive.sha256 (file, 8 MiB reads)", []).append(
            through(total, h.update))
        h.close()
        h = wrapdrive.sha256()
        t0 = time.monotonic()
        with open(path, "rb") as f:
            while h.update_from(f):
                pass
        rates.setdefault("wd.sha256.update_from (wrapdrive run)", []).append(
            total / (time.monotonic() - t0))
        h.close()
        t0 = time.monotonic()
        with open(path, "rb") as f:
            hashlib.file_digest(f, wrapdrive.sha256)
        rates.setdefault("hashlib.file_digest(f, wd.sha256)", []).append(
            total / (time.monotonic() - t0))
        rates.setdefault("engine (selfbench)", []).append(
            total / selfbench("sha256", MAX, total // MAX))
    report(f"sha256 of a {args.sha_mib} MiB file:", rates)

    total = make(args.zlib_mib)
    rates = {}
    for _ in range(args.rounds):
        c = wrapdrive.compressobj()
        rates.setdefault("wrapdrive.compressobj (file)", []).append(
            through(total, c.compress))
        c.flush()
        rates.setdefault("engine (selfbench, 1 MiB pieces)", []).append(
            total / selfbench("zlib", piece, total // piece))
        rates["engine (selfbench)"] = rates["engine (selfbench, 1 MiB pieces)"]
    report(f"deflate of a {args.zlib_mib} MiB file:", rates)

    packed = path + ".z"
    c = wrapdrive.compressobj()
    with open(path, "rb") as f, open(packed, "wb") as out:
        for p in read_pieces(f):
            out.write(c.compress(p))
        out.write(c.flush())
    rates = {}
    for _ in range(args.rounds):
        d = wrapdrive.decompressobj()
        t0 = time.monotonic()
        n = 0
        with open(packed, "rb") as f:
            for p in read_pieces(f):
                n += len(d.decompress(p))
        n += len(d.flush())
        rates.setdefault("wrapdrive.decompressobj (file)", []).append(
            total / (time.monotonic() - t0))
        assert n == total and d.eof, (n, total)
        rates.setdefault("engine (selfbench inflate, 1 MiB)", []).append(
            total / selfbench("inflate", piece, total // piece))
        rates["engine (selfbench)"] = rates["engine (selfbench inflate, 1 MiB)"]
    report(f"inflate of that {args.zlib_mib} MiB file deflated (MiB/s of output):", rates)
    close_shared()
    os.unlink(path)
    os.unlink(packed)


# -- where the time goes ----------------------------------------------------------------------
def steps(args):
    """ns per step of the Python calls; sha256 64 KiB from C, path by path."""
    sys.path.insert(0, os.path.join(os.getcwd(), "userlib", "src"))
    from wrapdrive.abi import ffi, lib
    from wrapdrive.afalg import AfAlgHash
    from wrapdrive.api import request_queue
    from wrapdrive.bench import ops_per_second

    wd_bench = os.path.join(os.getcwd(), "userlib", "libwd", "wd_bench")

    def ns(step, per=1):
        return 1e9 / ops_per_second(lambda: (step(), 1)[1], args.seconds) / per

    def c_rate(mode, batch, spin_us=None):
        env = dict(os.environ)
        if spin_us is not None:
            env["WD_SPIN_US"] = str(spin_us)
        r = subprocess.run([wd_bench, "sha256", "65536", mode, str(batch), str(args.seconds * 2),
                            "selfbench"], capture_output=True, text=True, env=env, check=True)
        return float(r.stdout.split()[1]), r.stderr.strip().removeprefix("wd_bench: ")

    data = os.urandom(64)
    chunks = [data] * 64
    q = request_queue("crc32c")
    af = AfAlgHash("crc32c")
    pieces, lens, _ = q._pieces(chunks)
    out, st = ffi.new("uint32_t[]", 64), ffi.new("uint16_t[]", 64)
    src, cl = ffi.from_buffer(pieces), ffi.from_buffer("uint32_t[]", lens)
    nothing = lambda: None  # noqa: E731
    py_steps = {
        "a Python call (the harness's own cost, in every row)": lambda: ns(nothing),
        "a cffi call of a trivial C function (wd_errmsg)": lambda: ns(lib.wd_errmsg),
        "ffi.new('uint32_t[]', 64)": lambda: ns(lambda: ffi.new("uint32_t[]", 64)),
        "libwd's wd_crc32c_call(64 B): stage, submit, spin, reap": lambda: ns(
            lambda: lib.wd_crc32c_call(q.q, data, 64, 0)),
        "q.crc32c(64 B), the public call": lambda: ns(lambda: q.crc32c(data)),
        "AF_ALG crc32c 64 B, send + recv": lambda: ns(lambda: af.crc32c(data)),
        "q._pieces: a batch's layout, per item": lambda: ns(lambda: q._pieces(chunks), 64),
        "libwd's wd_do_crc32c_many(64) alone, per item": lambda: ns(
            lambda: lib.wd_do_crc32c_many(q.q, src, cl, 64, out, st), 64),
        "q.crc32c_many(64 x 64 B), the public call, per item": lambda: ns(
            lambda: q.crc32c_many(chunks), 64),
    }
    c_paths = (
        ("wd_send_sync + wd_recv_sync, shared memory", "sync", 1, None),
        ("  the same, spinning instead of sleeping", "sync", 1, 100000),
        ("wd_do_sha256 on unshared memory (staging copy)", "oneshot", 1, None),
        ("  the same, spinning instead of sleeping", "oneshot", 1, 100000),
        ("wd_send_many, 2 x 2 in flight, shared memory", "batch", 2, None),
    )
    try:
        for r in range(args.rounds):
            print(f"round {r}: crc32c 64 B, ns per call", flush=True)
            for name, fn in py_steps.items():
                print(f"  {name:<58} {fn():9,.0f}", flush=True)
            engine = 1000 / selfbench("sha256", 65536, 1000)
            print(f"round {r}: sha256 64 KiB from C, ops/s (engine's own {engine:,.0f}/s)")
            for name, mode, batch, spin_us in c_paths:
                rate, counters = c_rate(mode, batch, spin_us)
                print(f"  {name:<50} {rate:7,.0f}  {rate / engine:5.2f}x engine  ({counters})",
                      flush=True)
    finally:
        af.close()
        q.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("latency")
    a.add_argument("--idle", type=int, default=4000)
    a.add_argument("--n", type=int, default=3000)
    a.add_argument("--rounds", type=int, default=2)
    a.add_argument("--pin", action="store_true", help="keep the caller off the engine's CPU")
    a.add_argument("--verbose", action="store_true", help="show the busiest tasks")
    b = sub.add_parser("placement")
    b.add_argument("--runs", type=int, default=5)
    b.add_argument("--seconds", type=float, default=1.5)
    b.add_argument("--select", choices=("priority", "nearest"), default="priority")
    c = sub.add_parser("stream")
    c.add_argument("--sha-mib", type=int, default=256)
    c.add_argument("--zlib-mib", type=int, default=64)
    c.add_argument("--rounds", type=int, default=3)
    d = sub.add_parser("userstream")
    d.add_argument("--sha-mib", type=int, default=256)
    d.add_argument("--zlib-mib", type=int, default=64)
    d.add_argument("--rounds", type=int, default=3)
    e = sub.add_parser("steps")
    e.add_argument("--rounds", type=int, default=2)
    e.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    {"latency": latency, "placement": placement, "stream": stream,
     "userstream": userstream, "steps": steps}[args.cmd](args)


if __name__ == "__main__":
    main()
