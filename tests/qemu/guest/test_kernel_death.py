"""Death of a queue (its device unbound) as its users see it: every mapping,
including a doorbell page the driver provides itself, stays readable and writable
without a fault; the Python userlib and the CLI report a dead queue instead of
dying of SIGBUS, busy or idle."""
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402
import wd_modules  # noqa: E402

# These start processes, unbind devices and move up to WD_MAX_LEN per request: under
# TCG on a loaded 2-core host one test can take minutes (the harness's default is 60 s).
pytestmark = pytest.mark.slow(300)

DRIVER = "/sys/bus/platform/drivers/wd_dummy"
SCALE = float(os.environ.get("WD_TIMEOUT_SCALE", "1"))
DEAD_AND_MAPPED = 42


def _unbind(dev):
    return subprocess.Popen(["sh", "-c", f"echo {dev} > {DRIVER}/unbind"])


def _rebind(dev):
    if not os.path.exists(f"{kv.MDEV_BUS}/{dev}"):
        kv.write(f"{DRIVER}/bind", dev)


def _touch_every_page_child(ready_w, tname):
    """Owns a queue; once it is dead reads and writes every page of every
    mapping (the doorbell is the driver's own page here); exits 42."""
    code = 3
    try:
        q = kv.Queue("wd_dummy.1", tname)
        q.own_mdev = False
        for i in range(3):
            assert q.run(kv.WD_OP_NOP, tag=i)[:2] == (i, 0)
        db_off = q.regions[kv.WD_REGION_DOORBELL][2]
        assert os.pread(q.dev, 4, db_off) == q.db[:4]  # pread reads the same page
        os.write(ready_w, q.uuid.encode())
        end = time.monotonic() + 60
        while not q.status() & kv.WD_Q_DEAD and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(0.3)
        for m in (q.db, q.sq):
            for off in range(0, len(m), 4096):
                m[off] = (m[off] + 1) & 0xFF
        sum(q.cqr[::4096])
        kv.store32(q.db, kv.DB_SQ_TAIL, 77)
        if q.status() & kv.WD_Q_DEAD and kv.struct.unpack_from("<I", q.db, 0)[0] == 77:
            code = DEAD_AND_MAPPED
    finally:
        os._exit(code)


def test_driver_provided_doorbell_stays_mapped_after_death():
    with wd_modules.dummy_with(own_doorbell=1):
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(r)
            _touch_every_page_child(w, "crc32c")
        os.close(w)
        uuid = os.read(r, 64).decode()
        os.close(r)
        assert uuid, "the child could not use its queue"
        unbind = _unbind("wd_dummy.1")
        try:
            _, st = os.waitpid(child, 0)
            assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == DEAD_AND_MAPPED, \
                f"child wait status {st:#x} (SIGBUS is {signal.SIGBUS})"
            assert unbind.wait(60) == 0
        finally:
            _rebind("wd_dummy.1")


SCRIPT = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, os.path.join(os.getcwd(), "userlib", "src"))
    import wrapdrive
    from wrapdrive import Request
    mode = sys.argv[1]
    q = wrapdrive.request_queue("crc32c")
    assert q.parent == "wd_dummy.1", q.parent
    buf = q.alloc(16 << 20)
    reqs = []
    if mode == "busy":
        reqs = [Request(wrapdrive.WD_OP_CRC32C, buf.addr, 16 << 20) for _ in range(64)]
        q.send_batch(reqs)
    print("ready", flush=True)
    end = time.monotonic() + 90
    try:
        while time.monotonic() < end:
            if mode == "busy":
                q.recv()
            else:
                q.send(Request(wrapdrive.WD_OP_NOP, 0, 0))
                q.recv()
            time.sleep(0.001)
    except wrapdrive.QueueDeadError:
        q.close()
        print("dead", flush=True)
        sys.exit(0)
    sys.exit(3)
""")


def _prefer(dev):
    """Make the userlib pick dev (the other device's priority out of range)."""
    other = "wd_dummy.0" if dev == "wd_dummy.1" else "wd_dummy.1"
    p = f"{kv.MDEV_BUS}/{other}/priority"
    saved = kv.read(p)
    kv.write(p, "0")
    return lambda: kv.write(p, saved)


def _userlib_dies_cleanly(mode):
    restore = _prefer("wd_dummy.1")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    unbind = None
    try:
        assert select.select([proc.stdout], [], [], 120)[0]
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(0.2)
        unbind = _unbind("wd_dummy.1")
        rc = proc.wait(120)
        out, err = proc.communicate()
        assert rc == 0 and "dead" in out, (rc, out, err)
        assert unbind.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        restore()
        if unbind is not None:
            unbind.wait(60)
        _rebind("wd_dummy.1")


def test_userlib_busy_queue_reports_death():
    _userlib_dies_cleanly("busy")


def test_userlib_idle_queue_reports_death():
    _userlib_dies_cleanly("idle")


def test_cli_reports_death_instead_of_a_bus_error(tmp_path):
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.write(os.urandom(16 << 20))
    restore = _prefer("wd_dummy.1")
    proc = subprocess.Popen(["wrapdrive", "run", "-q", "crc32c"] + [str(big)] * 400,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    unbind = None
    try:
        assert select.select([proc.stdout], [], [], 120)[0]  # the first file is done
        proc.stdout.readline()
        unbind = _unbind("wd_dummy.1")
        rc = proc.wait(300)
        out, err = proc.communicate()
        assert rc == 1, (rc, err[-2000:])  # not 135 (SIGBUS), not 0 (it was unbound)
        assert "dead" in err.lower() or "gone" in err.lower(), err[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        restore()
        if unbind is not None:
            unbind.wait(60)
        _rebind("wd_dummy.1")


# A queue whose owner keeps this many pages pinned in its cache (8 MiB): their release,
# 64 pages at a time, is the window the next test aims at.
CACHED_PAGES = 2048
OWNER_DEATH_ROUNDS = 10


def _owner_with_cached_pins(ready_w):
    """Owns a queue on wd_dummy.0 whose engine keeps CACHED_PAGES pinned (root may
    cache pins); says its mdev, then sleeps until it is killed."""
    code = 3
    try:
        q = kv.Queue("wd_dummy.0", "crc32c")
        q.own_mdev = False
        data = os.urandom(CACHED_PAGES * 4096)
        _, iova, _ = q.dma_buffer(len(data), data)
        q.submit([kv.desc(1, kv.WD_OP_CRC32C, iova, len(data))])
        c = q.reap(1, timeout=120.0 * SCALE)[0]
        assert c.status == 0 and c.result == kv.kernel_crc32c(data)
        os.write(ready_w, q.uuid.encode())
        time.sleep(3600)
    finally:
        os._exit(code)


def _remove(uuid, done):
    kv.remove_mdev(uuid)
    done.set()


def test_owner_killed_while_its_queue_is_removed():
    """The removal of a queue (here its mdev's) kills it and unpins what it cached,
    through type1, which takes and drops a reference on the owner's mm for each page.
    If the owner dies meanwhile, that drop can be the mm's last: its teardown then ran
    in the removing task, and the final fput() of the queue's mapped regions waited for
    that task's return to user space, while the task waited for the queue to be
    released: removal hung for ever (found by the load test on the debug kernel, stop
    20).  Each round kills the owner as soon as the unpinning has begun."""
    limit = 60.0 * SCALE
    for rnd in range(OWNER_DEATH_ROUNDS):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _owner_with_cached_pins(w)
        os.close(w)
        removed = threading.Event()
        try:
            assert select.select([r], [], [], limit)[0], "the owner never got its queue"
            uuid = os.read(r, 64).decode()
            assert uuid, "the owner died before its queue was ready"
            pinned = f"{kv.DEBUGFS}/wd_dummy.0/{uuid}/pinned_pages"
            cached = int(kv.read(pinned))
            assert cached >= CACHED_PAGES // 2, f"only {cached} pages cached"
            remover = threading.Thread(target=_remove, args=(uuid, removed), daemon=True)
            remover.start()
            end = time.monotonic() + limit
            while time.monotonic() < end:
                try:
                    if int(kv.read(pinned)) < cached:
                        break  # the unpinning has begun
                except (OSError, ValueError):
                    break  # already gone
                time.sleep(0.001)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pid = 0
            assert removed.wait(limit), (
                f"round {rnd}: the removal of {uuid} did not return {limit:.0f} s after "
                "its owner was killed")
            assert not os.path.exists(f"{kv.MDEV_DEVICES}/{uuid}")
        finally:
            os.close(r)
            if pid:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    assert kv.dbg("pinned_pages") == 0
