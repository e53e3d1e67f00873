"""``wrapdrive bench``: the public API against AF_ALG and in-process code, in one run.

Every path runs the same work on the same machine, in interleaved rounds, so
the ratios printed at the end compare like with like.  Absolute figures on
an emulated (TCG) guest mean little; the ratios are what this reports and
what the targets are written against.  Nothing is pinned: engine placement
is the driver's business, as a hardware engine is simply elsewhere.

Paths, the public API first (one line each in the table and the plot):

``py-call``
    the Python call a user makes, one at a time: ``q.crc32c(b)``,
    ``q.sha256(b)``, ``q.compress(b)`` (zlib cases also ``py-decompress``)
    on plain bytes: one C call each (stage, submit, spin, reap).
``py-many-bN``
    ``q.crc32c_many`` / ``q.sha256_many`` of N chunks: one C call per
    batch; ops/s counts items.
``c-sync``
    the seed's ``wd_send_sync`` + ``wd_recv_sync`` from C, one request at
    a time (the ``wd_bench`` program, its own process).
``c-call``
    libwd's one-shot helpers (``wd_do_crc32c`` ...) from C on unshared
    memory, one at a time.
``prepared-bN``
    the extra column: N requests built once over pre-shared buffers,
    resubmitted with ``wd_send_many``, two batches in flight (C).
``afalg``
    the kernel's AF_ALG socket: one send and one recv per request.
``cpu``
    in-process Python: hashlib, zlib, the ``crc32c`` package when installed.
``engine``
    the dummy engine's own rate on kernel buffers, no queue at all (its
    debugfs self-benchmark): the limit the queue path can approach.
``engine-inflate``
    (zlib cases) the same for inflate, the limit of ``py-decompress``: the
    engine inflating the case's data, deflated once before it is timed.
``dummy-copy`` / ``edu-dma-copy``
    the device-DMA row: ``q.copy(b)`` of DMA_COPY_SIZE bytes on wd_dummy's
    memcpy (CPU copies) and on wd_edu's (QEMU's edu device: DMA through a
    4 KiB device buffer, 100 ms per DMA), each device preferred in turn by
    its sysfs priority; measured when a wd_edu device is present (``nox -s
    bench`` boots the edu-legacy machine), reported as a ratio, no target.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import sysfs
from .afalg import AfAlgHash, AfAlgUnavailable
from .crc import crc32c_sw
from .queue import Queue
from .selection import Capa

DEBUGFS = Path("/sys/kernel/debug/wrapdrive")

#: (algo_type, size) pairs the issue's targets are written for.
DEFAULT_CASES: tuple[tuple[str, int], ...] = (
    ("crc32c", 64), ("crc32c", 4096), ("sha256", 64), ("sha256", 65536), ("zlib", 262144),
)
BATCH = 64
ALGOS = ("crc32c", "sha256", "zlib")  # the algorithms a case may name
#: bytes of each copy in the device-DMA row (four fills of the edu device's buffer).
DMA_COPY_SIZE = 16384
#: the device-DMA row's paths: the driver whose memcpy each measures.
DMA_COPY_PATHS = {"dummy-copy": "wd_dummy", "edu-dma-copy": "wd_edu"}
#: the engine's own rates (debugfs selfbench) of a zlib case: path -> the name selfbench
#: runs; other cases have only "engine", run under the case's algo_type.
ENGINE_PATHS = {"engine": "zlib", "engine-inflate": "inflate"}
#: the C benchmark program (userlib/libwd/wd_bench, `make -C userlib/libwd`).
C_BENCH_ENV = "WD_C_BENCH"
C_BENCH_DEFAULT = Path(__file__).resolve().parents[2] / "libwd" / "wd_bench"


@dataclass
class Result:
    """Ops/s of one path on one (algo, size), one figure per round."""

    path: str
    algo: str
    size: int
    rounds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rounds) if self.rounds else 0.0

    @property
    def spread(self) -> float:
        """(max - min) / median over the rounds, as a fraction."""
        if len(self.rounds) < 2 or not self.median:
            return 0.0
        return (max(self.rounds) - min(self.rounds)) / self.median

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(median_ops=self.median, spread=self.spread,
                 median_mbps=self.median * self.size / 1e6)
        return d


def sample_data(size: int) -> bytes:
    """Deterministic, moderately compressible bytes (so zlib has work)."""
    words = [b"wrapdrive", b"queue", b"doorbell", b"ring", b"engine", b"vfio",
             b"mdev", b"accelerator", b"completion", b"descriptor"]
    out = bytearray()
    x = 12345
    while len(out) < size:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out += words[x % len(words)]
        out += bytes([32 + (x >> 16) % 95])
    return bytes(out[:size])


def engine_like_data(size: int) -> bytes:
    """The engine self-benchmark's kind of input: half random bytes, half a
    run of one byte.  zlib's speed depends on the data (a run compresses many
    times faster than text), so the zlib case feeds every path this, to
    compare with the engine's own rate like with like."""
    import random

    half = size // 2
    return random.Random(42).randbytes(half) + b"w" * (size - half)


def case_data(algo: str, size: int) -> tuple[bytes, str]:
    """The input of a case and the C benchmark's name for its kind."""
    if algo == "zlib":
        return engine_like_data(size), "selfbench"
    return sample_data(size), "text"


def ops_per_second(step: Callable[[], int], seconds: float) -> float:
    """Run ``step`` (which returns how many operations it did) for about
    ``seconds``; ops/s over the whole time.  The clock is read once per
    group of steps, the group growing until it lasts a few milliseconds, so
    reading the clock (a syscall on a guest without a vDSO clocksource) does
    not weigh on the fastest paths."""
    ops = 0
    reps = 1
    start = time.perf_counter()
    end = start + seconds
    now = start
    while now < end:
        t0 = now
        for _ in range(reps):
            ops += step()
        now = time.perf_counter()
        if now - t0 < 0.005:
            reps *= 2
    return ops / (now - start)


# -- the paths ----------------------------------------------------------------------------
def py_steps(q: Queue, algo: str, data: bytes, batch: int) -> dict[str, Callable[[], int]]:
    """The Python calls users make, on plain bytes."""
    chunks = [data] * batch
    if algo == "crc32c":
        return {"py-call": lambda: (q.crc32c(data), 1)[1],
                f"py-many-b{batch}": lambda: len(q.crc32c_many(chunks))}
    if algo == "sha256":
        return {"py-call": lambda: (q.sha256(data), 1)[1],
                f"py-many-b{batch}": lambda: len(q.sha256_many(chunks))}
    packed = q.compress(data)
    return {"py-call": lambda: (q.compress(data), 1)[1],
            "py-decompress": lambda: (q.decompress(packed), 1)[1]}


def c_bench_path() -> Path | None:
    path = Path(os.environ.get(C_BENCH_ENV, str(C_BENCH_DEFAULT)))
    return path if path.exists() else None


C_MODES = {"c-sync": ("sync", 1), "c-call": ("oneshot", 1), f"prepared-b{BATCH}": ("batch", BATCH)}


def c_step(prog: Path, algo: str, size: int, mode: str, batch: int, seconds: float,
           data: str = "text") -> float:
    """One round of the C program: its own process and queue; ops/s."""
    out = subprocess.run([str(prog), algo, str(size), mode, str(batch), str(seconds), data],
                         capture_output=True, text=True, timeout=60 + 10 * seconds)
    if out.returncode:
        raise RuntimeError(f"{prog.name} {algo} {size} {mode}: {out.stderr.strip()}")
    return float(out.stdout.split()[-1])


def cpu_step(algo: str, data: bytes) -> tuple[str, Callable[[], int]]:
    """The in-process reference for ``algo`` and the name of what it uses."""
    if algo == "sha256":
        return "cpu", lambda: (hashlib.sha256(data).digest(), 1)[1]
    if algo == "zlib":
        return "cpu", lambda: (zlib.compress(data), 1)[1]
    try:
        import crc32c as crc_pkg  # type: ignore[import-not-found, unused-ignore]

        fn: Callable[[bytes], int] = crc_pkg.crc32c
        return "cpu", lambda: (fn(data), 1)[1]
    except ImportError:
        return "cpu-pure-python", lambda: (crc32c_sw(data), 1)[1]


def engine_rate(parent: str, algo: str, size: int, count: int) -> float:
    """The engine's own ops/s from its debugfs self-benchmark."""
    path = DEBUGFS / parent / "selfbench"
    with open(path, "r+") as f:
        f.write(f"{algo} {size} {count}\n")
        f.flush()
        f.seek(0)
        line = f.read().split()
    # "ALGO SIZE COUNT NSEC"
    done, nsec = int(line[2]), int(line[3])
    return done / (nsec / 1e9) if nsec else 0.0


# -- the run ------------------------------------------------------------------------------
@dataclass
class Config:
    cases: tuple[tuple[str, int], ...] = DEFAULT_CASES
    rounds: int = 5
    seconds: float = 0.25
    batch: int = BATCH


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cfg: Config) -> list[Result]:
    """Measure every path of every case, rounds interleaved across paths."""
    results: list[Result] = []
    prog = c_bench_path()
    if prog is None:
        _progress(f"  C paths skipped: no {C_BENCH_DEFAULT} (make -C userlib/libwd, "
                  f"or set {C_BENCH_ENV})")
    for algo, size in cfg.cases:
        data, kind = case_data(algo, size)
        steps: dict[str, Callable[[], int]] = {}
        cleanup: list[Callable[[], None]] = []
        q = Queue(Capa(algo))
        cleanup.append(q.close)
        try:
            steps.update(py_steps(q, algo, data, cfg.batch))
            if algo in ("crc32c", "sha256"):
                try:
                    alg = AfAlgHash(algo)
                    cleanup.insert(0, alg.close)
                    steps["afalg"] = lambda a=alg, d=data: (a.digest(d), 1)[1]  # type: ignore[misc]
                except AfAlgUnavailable as exc:
                    _progress(f"  afalg skipped: {exc}")
            name, step = cpu_step(algo, data)
            steps[name] = step
            paths = list(steps) + (list(C_MODES) if prog else [])
            case = {p: Result(p, algo, size) for p in paths}
            engines = ENGINE_PATHS if algo == "zlib" else {"engine": algo}
            engine = {p: Result(p, algo, size) for p in engines}
            count = max(8, int(2e6 // max(size, 64)))
            for r in range(cfg.rounds):
                _progress(f"{algo} {size} B: round {r + 1}/{cfg.rounds}")
                for p, st in steps.items():
                    case[p].rounds.append(ops_per_second(st, cfg.seconds))
                if prog is not None:
                    for p, (mode, batch) in C_MODES.items():
                        case[p].rounds.append(c_step(prog, algo, size, mode, batch,
                                                     cfg.seconds, kind))
                for p, bench_name in engines.items():
                    engine[p].rounds.append(engine_rate(q.parent, bench_name, size, count))
            results += [*case.values(), *engine.values()]
        finally:
            for c in cleanup:
                c()
    return results + device_copy(cfg)


def _memcpy_device(driver: str, root: Path = sysfs.SYSFS) -> sysfs.Device | None:
    """The first device of `driver` offering a plain memcpy type."""
    for d in sysfs.scan(root):
        if any(t.algo_type == "memcpy" and not t.flags and t.name.startswith(driver + "-")
               for t in d.types):
            return d
    return None


def _set_priority(dev: sysfs.Device, value: int | str) -> None:
    (dev.path / "priority").write_text(f"{value}\n")


def device_copy(cfg: Config, root: Path = sysfs.SYSFS) -> list[Result]:
    """The device-DMA row: q.copy() on each driver's memcpy, that device preferred
    (priority 1) while its queue is opened; nothing when no wd_edu device is there."""
    devs = {p: _memcpy_device(drv, root) for p, drv in DMA_COPY_PATHS.items()}
    if not all(devs.values()):
        _progress("  device-DMA row skipped: no wd_edu device (nox -s bench boots one)")
        return []
    data = os.urandom(DMA_COPY_SIZE)
    results = {p: Result(p, "memcpy", DMA_COPY_SIZE) for p in devs}
    queues: dict[str, Queue] = {}
    try:
        for p, dev in devs.items():
            assert dev is not None
            old = dev.priority if dev.priority is not None else 0
            _set_priority(dev, 1)
            try:
                queues[p] = Queue(Capa("memcpy"), root)
            finally:
                _set_priority(dev, old)
            if queues[p].parent != dev.name:
                raise RuntimeError(f"{p}: a memcpy queue landed on {queues[p].parent}, "
                                   f"not {dev.name}")
        for r in range(cfg.rounds):
            _progress(f"memcpy {DMA_COPY_SIZE} B by device: round {r + 1}/{cfg.rounds}")
            for p, q in queues.items():
                results[p].rounds.append(ops_per_second(lambda q=q: (q.copy(data), 1)[1],  # type: ignore[misc]
                                                        cfg.seconds))
    finally:
        for q in queues.values():
            q.close()
    return list(results.values())


def find(results: Iterable[Result], path: str, algo: str, size: int) -> Result | None:
    for r in results:
        if (r.path, r.algo, r.size) == (path, algo, size):
            return r
    return None


@dataclass
class Ratio:
    name: str
    value: float
    target: str
    met: bool


def ratios(results: list[Result]) -> list[Ratio]:
    """The issue's targets, each from figures of this one run."""
    out: list[Ratio] = []

    def med(path: str, algo: str, size: int) -> float:
        r = find(results, path, algo, size)
        return r.median if r else 0.0

    def add(name: str, num: float, den: float, target: float) -> None:
        if num and den:
            v = num / den
            out.append(Ratio(name, v, f">= {target:g}", v >= target))

    for algo in ("crc32c", "sha256"):
        af = med("afalg", algo, 64)
        add(f"{algo} 64 B q.{algo}_many(b{BATCH}) / AF_ALG", med(f"py-many-b{BATCH}", algo, 64),
            af, 5 if algo == "crc32c" else 1)
        add(f"{algo} 64 B q.{algo}() one at a time / AF_ALG", med("py-call", algo, 64), af,
            2 if algo == "crc32c" else 1)
        add(f"{algo} 64 B C wd_send_sync+wd_recv_sync / AF_ALG", med("c-sync", algo, 64), af, 1)
        add(f"{algo} 64 B C prepared b{BATCH} / AF_ALG", med(f"prepared-b{BATCH}", algo, 64),
            af, 10 if algo == "crc32c" else 1)
    add("sha256 64 KiB q.sha256() / engine", med("py-call", "sha256", 65536),
        med("engine", "sha256", 65536), 0.95)
    add("sha256 64 KiB q.sha256() / AF_ALG", med("py-call", "sha256", 65536),
        med("afalg", "sha256", 65536), 1.2)
    add("zlib 256 KiB q.compress() / engine", med("py-call", "zlib", 262144),
        med("engine", "zlib", 262144), 0.9)
    add("zlib 256 KiB C wd_do_xfer deflate / engine", med("c-call", "zlib", 262144),
        med("engine", "zlib", 262144), 0.9)
    add("zlib 256 KiB q.decompress() / engine inflate", med("py-decompress", "zlib", 262144),
        med("engine-inflate", "zlib", 262144), 0.9)
    edu = med("edu-dma-copy", "memcpy", DMA_COPY_SIZE)
    dummy = med("dummy-copy", "memcpy", DMA_COPY_SIZE)
    if edu and dummy:  # a figure, not a target: QEMU's edu takes 100 ms per DMA
        out.append(Ratio(f"memcpy {_size(DMA_COPY_SIZE)} edu DMA q.copy() / wd_dummy",
                         edu / dummy, "", True))
    return out


#: column order of the table: the public API first, prepared batches last.
COLUMNS = ("py-call", f"py-many-b{BATCH}", "py-decompress", "c-sync", "c-call", "afalg", "cpu",
           "cpu-pure-python", *ENGINE_PATHS, f"prepared-b{BATCH}", *DMA_COPY_PATHS)


def table(results: list[Result]) -> str:
    """Medians in ops/s, one row per case, the public API's columns first."""
    cases = list(dict.fromkeys((r.algo, r.size) for r in results))
    present = {r.path for r in results}
    cols = [c for c in COLUMNS if c in present] + sorted(present - set(COLUMNS))
    head = f"| {'case':15} | " + " | ".join(f"{c:>13}" for c in cols) + " |"
    lines = [head, "|" + "-" * 17 + "|" + "|".join("-" * 14 + ":" for _ in cols) + "|"]
    for algo, size in cases:
        cells = []
        for c in cols:
            r = find(results, c, algo, size)
            cells.append(f"{r.median:>13,.0f}" if r and r.rounds else f"{'':>13}")
        lines.append(f"| {algo + ' ' + _size(size):15} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spreads(results: list[Result]) -> str:
    """The spread of every figure, for judging the noise."""
    return "\n".join(f"{r.algo:7} {r.size:8d} {r.path:16} spread {r.spread * 100:5.1f}% "
                     f"({len(r.rounds)} rounds)" for r in results)


def _size(n: int) -> str:
    if n % 1024 == 0 and n >= 1024:
        return f"{n // 1024} KiB"
    return f"{n} B"


def _verdict(r: Ratio) -> str:
    if not r.target:
        return "(a figure, no target)"
    return f"target {r.target:7} {'met' if r.met else 'MISSED'}"


def ratio_table(rs: list[Ratio]) -> str:
    return "\n".join(f"{r.name:55} {r.value:8.3g}  {_verdict(r)}" for r in rs)


def write_json(path: Path, results: list[Result], rs: list[Ratio], cfg: Config) -> None:
    path.write_text(json.dumps({
        "config": {"rounds": cfg.rounds, "seconds": cfg.seconds, "batch": cfg.batch},
        "results": [r.as_dict() for r in results],
        "ratios": [asdict(r) for r in rs],
    }, indent=2) + "\n")


def plot(json_path: Path, png_path: Path) -> None:
    """ops/s against size, one line per path, one panel per algorithm."""
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    doc = json.loads(json_path.read_text())
    algos = sorted({r["algo"] for r in doc["results"]})
    fig, axes = plt.subplots(1, len(algos), figsize=(6 * len(algos), 4.5), squeeze=False)
    for ax, algo in zip(axes[0], algos, strict=True):
        rows = [r for r in doc["results"] if r["algo"] == algo]
        for path in sorted({r["path"] for r in rows}):
            pts = sorted((r["size"], r["median_ops"]) for r in rows if r["path"] == path)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=path)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(algo)
        ax.set_xlabel("request size (bytes)")
        ax.set_ylabel("ops/s (median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
