"""Error paths, driven by the kernel's fault injection (kernels with
CONFIG_FAILSLAB and fail-nth, such as the debug kernel; skipped elsewhere).

Each test counts the allocations one operation makes (fail-nth, set high, counts
down), then makes the nth of them fail, for every n or, when there are more than
$WD_FAULT_NTHS (default FAULT_NTHS; 0 means every one), for that many n spread
evenly from the first to the last: loading wd_dummy (module, platform devices,
the accelerators' registration; the image is read before, so that no failure lands
in the guest's root filesystem), creating a queue (the mdev probe) and opening it
(VFIO open: regions, the mm notifier, the driver's queue_open).  Every failure
must unwind: no oops, and the next attempt works; kmemleak, when present, must
find nothing of WrapDrive's left behind.  (On the debug kernel under TCG a load
of wd_dummy takes 5-13 s: the 1st, 2nd, 3rd ... in turn would take an hour.)

The same for mapping a queue (mmap of every region) and its memory (VFIO_IOMMU_MAP_DMA,
which reaches our dma_unmap on the way back), with fail_page_alloc counted as well as
failslab.  Requests run in the driver's engine threads, not in the caller: those are
marked make-it-fail and slab and page allocations fail at random under them; every
request must still complete with WD_STS_OK (verified) or WD_STS_NOMEM.

An injected fault prints one FAULT_INJECTION line (verbose 1): the stack dump of the
default (verbose 2) is not a bug, and the harness would take its Call Trace for one."""
import contextlib
import ctypes
import errno
import os
import subprocess
import sys
import zlib

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402
import wd_measure  # noqa: E402

FAILSLAB = "/sys/kernel/debug/failslab"
FAIL_PAGE_ALLOC = "/sys/kernel/debug/fail_page_alloc"
FAIL_USERCOPY = "/sys/kernel/debug/fail_usercopy"
MODDIR = os.environ.get("WD_MODULE_DIR", "")
FAULT_NTHS = 12
NTHS = int(os.environ.get("WD_FAULT_NTHS", str(FAULT_NTHS)))
COUNTING = 1 << 30  # fail-nth while counting: never reached
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

pytestmark = pytest.mark.skipif(
    not (os.path.exists("/proc/self/fail-nth") and os.path.isdir(FAILSLAB)),
    reason="no slab fault injection (CONFIG_FAILSLAB, fail-nth) in this kernel")


@contextlib.contextmanager
def knobs(settings):
    """Fault-injection debugfs files set in the order given, for a while, restored after
    in the reverse order.  The order matters: a caller sets task-filter before probability,
    and restoring task-filter first would make every task in the guest fail allocations
    at random until probability is back to 0 (stop 18: the runner died of ENOMEM)."""
    saved = {}
    try:
        for path, value in settings.items():
            if os.path.exists(path):
                saved[path] = kv.read(path)
                kv.write(path, value)
        yield
    finally:
        for path, value in reversed(saved.items()):
            kv.write(path, value)


def failslab_counts_sleeping_allocations():
    """fail-nth counts only allocations failslab and fail_page_alloc look at: make them
    look at GFP_KERNEL ones too (by default they ignore allocations that may sleep).
    User pages (highmem) stay out: a failed user page fault only retries.  It counts
    user copies too (fail_usercopy), and each injection prints one line, no stack."""
    return knobs({f"{FAILSLAB}/ignore-gfp-wait": "N", f"{FAILSLAB}/verbose": "1",
                  f"{FAIL_PAGE_ALLOC}/ignore-gfp-wait": "N",
                  f"{FAIL_PAGE_ALLOC}/min-order": "0",
                  f"{FAIL_PAGE_ALLOC}/verbose": "1",
                  f"{FAIL_USERCOPY}/verbose": "1"})


def allocations_of(fn):
    """(how many allocations fn made that failslab or fail_page_alloc look at, fn's
    result): fn runs whole, fail-nth counting down from a number it never reaches."""
    res, left = with_nth_failure(COUNTING, fn)
    return COUNTING - left, res


def nths_of(count, budget=NTHS):
    """Which allocations to fail, of count: every one, or budget of them spread evenly
    from the first to the last."""
    if count <= 0:
        return []
    if budget <= 0 or count <= budget:
        return list(range(1, count + 1))
    if budget == 1:
        return [1]
    return sorted({1 + round(i * (count - 1) / (budget - 1)) for i in range(budget)})


def with_nth_failure(nth, fn):
    """Run fn with the nth allocation of this thread failing; returns (fn's result or
    the OSError it raised, what fail-nth had left: 0 when the nth allocation failed).

    One fd, opened before arming (an open after it would count allocations
    too).  fail-nth cannot seek (ESPIPE on 6.1); a write leaves the file
    position alone, so the read after it starts at 0.  Besides allocations,
    fail-nth counts user copies (CONFIG_FAULT_INJECTION_USERCOPY)."""
    path = "/proc/thread-self/fail-nth"
    fd = os.open(path, os.O_RDWR)
    try:
        os.write(fd, str(nth).encode())
        try:
            res = fn()
        except OSError as e:
            res = e
        try:
            left = int(os.read(fd, 32).decode().strip() or "0")
        except OSError as e:
            # fail-nth counts user copies too (fail_usercopy): with 1 left, this read's
            # own copy is the nth and fails.  fn made one allocation fewer than nth.
            if e.errno != errno.EFAULT:
                raise
            left = 1
    finally:
        disarm(fd)
        os.close(fd)
    return res, left


def disarm(fd):
    """Write 0 to fail-nth, whatever is left.  When fn left 2 (it made two allocations
    fewer than counted: runs vary), the read's copy to user space takes one and this
    write's copy from it is the nth: EFAULT, and the countdown is over (fail-nth is 0
    after a failure).  Unhandled, that exception lost what fn had returned: an open
    queue, whose mdev's removal then waited for this very process for ever (CI, stop 20)."""
    try:
        os.write(fd, b"0")
    except OSError as e:
        if e.errno != errno.EFAULT:
            raise


def _syscall(nr, *args):
    ret = libc.syscall(ctypes.c_long(nr), *args)
    if ret:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return 0


def _init_module(image, params):
    """init_module(2) from memory: a load from a file (finit_module) reads it over the
    guest's root filesystem, 9p, and a 9p read whose allocation fails can leave the mount
    answering EINVAL to every later read and exec (stop 22's CI: every test after this
    file failed, as `rmmod` could no longer be exec'd)."""
    return _syscall(kv.abi.CONST["SYS_init_module"], image, ctypes.c_ulong(len(image)),
                    ctypes.c_char_p(params))


def _loaded(name):
    return os.path.exists(f"/sys/module/{name}")


def fail_each(label, fn, after=lambda res: None):
    """fn once whole, counting its allocations, then again with each allocation
    nths_of() picks failing; after(fn's result or error) follows every run (the
    caller's checks and clean-up).  Returns how many runs had their allocation fail."""
    count, res = allocations_of(fn)
    after(res)
    injected = 0
    for nth in nths_of(count):
        res, left = with_nth_failure(nth, fn)
        after(res)
        injected += left == 0
    wd_measure.record("faults", operation=label, allocations=count, runs_failed=injected)
    assert count and injected, f"{label}: no allocation failed ({count} counted)"
    return injected


def _load_wd_dummy_from(image):
    """fn for fail_each: load wd_dummy from its image, already in memory."""
    buf = ctypes.create_string_buffer(image, len(image))
    return lambda: _init_module(buf, b"nr_devices=2")


def _rmmod_if_loaded(_res):
    """delete_module(2) itself, as the load is init_module(2): nothing is exec'd
    between two runs."""
    if _loaded("wd_dummy"):
        _syscall(kv.abi.CONST["SYS_delete_module"], ctypes.c_char_p(b"wd_dummy"), os.O_NONBLOCK)


def test_loading_the_driver_unwinds_every_allocation_failure():
    assert subprocess.run(["rmmod", "wd_dummy"]).returncode == 0
    try:
        with failslab_counts_sleeping_allocations():
            with open(f"{MODDIR}/wd_dummy.ko", "rb") as f:
                load = _load_wd_dummy_from(f.read())
            fail_each("module load", load, _rmmod_if_loaded)
    finally:
        if not _loaded("wd_dummy"):
            assert subprocess.run(["insmod", f"{MODDIR}/wd_dummy.ko"]).returncode == 0
    assert kv.parents() == ["wd_dummy.0", "wd_dummy.1"]
    with kv.Queue("wd_dummy.0", "crc32c") as q:
        assert q.run(kv.WD_OP_NOP, tag=1)[:2] == (1, 0)
    assert not kv.kmemleak_of_ours()


def test_creating_and_opening_a_queue_unwind_every_allocation_failure():
    made = []
    create = f"{kv.type_dir('wd_dummy.0', 'sha256')}/create"

    def create_one():
        u = str(kv.uuidlib.uuid4())
        made.append(u)
        kv.write(create, u)

    def opened(res):
        if isinstance(res, kv.Queue):
            try:
                assert res.run(kv.WD_OP_NOP, tag=2)[:2] == (2, 0)
            finally:
                res.close()  # an open queue left behind: its mdev's removal would wait for us

    try:
        with failslab_counts_sleeping_allocations():
            fail_each("mdev create", create_one)
            made[:] = [u for u in made if os.path.exists(f"{kv.MDEV_DEVICES}/{u}")]
            u = made[0]
            fail_each("VFIO open", lambda: kv.Queue(mdev=u), opened)
    finally:
        for v in made:
            if os.path.exists(f"{kv.MDEV_DEVICES}/{v}"):
                kv.remove_mdev(v)
    t = kv.type_dir("wd_dummy.0", "sha256")
    assert kv.read(f"{t}/available_instances") == "4096"
    assert kv.dbg("pinned_pages") == 0
    assert not kv.kmemleak_of_ours()


def test_mapping_a_queue_and_its_memory_unwind_every_allocation_failure():
    with failslab_counts_sleeping_allocations(), kv.Queue("wd_dummy.0", "crc32c") as q:
        data = b"fault injection" * 300
        m = kv.mmap.mmap(-1, 1 << 16)
        m[:len(data)] = data
        vaddr = kv.ctypes.addressof(kv.ctypes.c_char.from_buffer(m))

        def faulted_in(res):
            if isinstance(res, kv.mmap.mmap):
                sum(res[::4096])  # its pages fault in

        for index in range(kv.WD_NUM_REGIONS):
            prot = kv.mmap.PROT_READ if index == kv.WD_REGION_CQ else \
                kv.mmap.PROT_READ | kv.mmap.PROT_WRITE
            fail_each(f"mmap of region {index}", lambda i=index, p=prot: q.map_region(i, prot=p),
                      faulted_in)
        iova = 1 << 33
        tags = iter(range(1, 1 << 20))

        def used_and_unmapped(res):
            if res is None:  # mapped: a request on it, then unmapped
                tag = next(tags)
                c = q.run(kv.WD_OP_CRC32C, iova, len(data), tag=tag)
                assert (c.tag, c.status, c.result) == (tag, 0, kv.kernel_crc32c(data))
                q.unmap_dma(iova, 1 << 16)

        fail_each("MAP_DMA", lambda: q.map_dma(vaddr, iova, 1 << 16), used_and_unmapped)
        del m
    assert kv.dbg("pinned_pages") == 0
    assert not kv.kmemleak_of_ours()


def _times(path):
    return int(kv.read(f"{path}/times"))


def test_requests_under_random_allocation_failures_in_the_engine():
    """The engine threads allocate (zlib streams, pins, DMA maps): under them 1 in 5
    slab and page allocations fails.  Every request completes OK (verified) or NOMEM."""
    budget = 100000
    parent = "wd_dummy.0"
    data = bytes(range(256)) * 64 + kv.os.urandom(8192)
    ok = nomem = 0
    with kv.Queue(parent, "zlib") as zq, kv.Queue(parent, "sha256") as sq, \
            kv.Queue(parent, "crc32c") as cq:
        bound = kv.abi.deflate_bound(len(data))
        zm, zsrc, _ = zq.dma_buffer(len(data) + bound, data)
        sm, ssrc, _ = sq.dma_buffer(len(data) + 64, data)
        _, csrc, _ = cq.dma_buffer(len(data), data)
        crc = kv.kernel_crc32c(data)
        pids = kv.engine_pids(parent)
        assert pids
        attrs = {}
        for base in (FAILSLAB, FAIL_PAGE_ALLOC):
            attrs.update({f"{base}/task-filter": "Y", f"{base}/probability": "20",
                          f"{base}/interval": "1", f"{base}/times": str(budget),
                          f"{base}/space": "0", f"{base}/verbose": "1",
                          f"{base}/ignore-gfp-wait": "N"})
        attrs[f"{FAIL_PAGE_ALLOC}/min-order"] = "0"
        with knobs(attrs), knobs({f"/proc/{p}/make-it-fail": "1" for p in pids}):
            for i in range(150):
                for q, op, src, dst, dst_len, check in (
                        (zq, kv.WD_OP_DEFLATE, zsrc, zsrc + len(data), bound,
                         lambda c: zlib_ok(zm, len(data), c, data)),
                        (sq, kv.WD_OP_SHA256, ssrc, ssrc + len(data), 32,
                         lambda c: bytes(sm[len(data):len(data) + 32]) ==
                         kv.hashlib_sha256(data)),
                        (cq, kv.WD_OP_CRC32C, csrc, 0, 0,
                         lambda c, crc=crc: c.result == crc)):
                    c = q.run(op, src, len(data), dst, dst_len, tag=i)
                    assert c.tag == i and c.status in (kv.WD_STS_OK, kv.WD_STS_NOMEM), c
                    if c.status == kv.WD_STS_OK:
                        assert check(c), (op, c)
                        ok += 1
                    else:
                        nomem += 1
            injected = sum(budget - _times(b) for b in (FAILSLAB, FAIL_PAGE_ALLOC))
    wd_measure.record("faults", operation="engine", injected=injected, requests=ok + nomem, verified=ok,
                      nomem=nomem)
    with kv.Queue(parent, "zlib") as q:
        bound = kv.abi.deflate_bound(len(data))
        m, src, _ = q.dma_buffer(len(data) + bound, data)
        c = q.run(kv.WD_OP_DEFLATE, src, len(data), src + len(data), bound)
        assert c.status == 0 and zlib_ok(m, len(data), c, data)
    assert kv.dbg("pinned_pages") == 0
    assert not kv.kmemleak_of_ours()


def zlib_ok(m, off, c, data):
    return zlib.decompress(bytes(m[off:off + c.out_len])) == data
