"""Load: WORKERS processes x 8 queues on mixed algorithms (half of each process's queues
on wd_dummy.1, which is unbound and bound again meanwhile), every result verified, while
KILLS of the processes are SIGKILLed with requests in flight and replaced.  A worker
with nothing to reap sleeps on its queue's eventfd as wd_recv_sync does (the uapi's
"Sleeping"), so the wake-ups of completion, death and removal run under all of it too.

Nothing completed may be wrong; nothing submitted to a live queue may be lost (each
request completes, or its queue reports WD_Q_DEAD); at the end no page is pinned, no mdev
is left (the parent removes the mdevs of the processes it killed: an mdev is a sysfs
object, not the process's), every queue is back in the pool and kmemleak finds nothing of
ours.

Duration and kills: $WD_LOAD_SECONDS (60) and $WD_LOAD_KILLS (100); the run lasts at least
the duration and until the kills are done (at most 4x the duration, times the
timeout scale).  Under TCG with a
debug kernel a process needs seconds to open its 8 queues, so kills are spaced by
duration/kills but only ever hit a process that has requests in flight."""
import contextlib
import errno
import hashlib
import json
import os
import random
import select
import signal
import statistics
import sys
import threading
import time
import uuid as uuidlib
import zlib

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402
import wd_measure  # noqa: E402

WORKERS = 8
SECONDS = float(os.environ.get("WD_LOAD_SECONDS", "60"))
KILLS = int(os.environ.get("WD_LOAD_KILLS", "100"))
SCALE = float(os.environ.get("WD_TIMEOUT_SCALE", "1"))
# A request not completed this long after its queue was last seen alive is lost.
LOST_AFTER = 30.0 * SCALE
UNBIND_PERIOD = 8.0
# A worker with nothing to reap sleeps on its queue's eventfd (the uapi's "Sleeping"), at
# most this long before it looks again: under TCG, eight processes spinning on their rings
# would leave the engine and the replacements of killed processes little CPU.
WAKE_LIMIT = 1.0
UNBIND_LIMIT = 60.0 * SCALE
DRIVER = "/sys/bus/platform/drivers/wd_dummy"
STABLE, FLAKY = "wd_dummy.0", "wd_dummy.1"
QUEUES = ((STABLE, "crc32c"), (STABLE, "sha256"), (STABLE, "memcpy"), (STABLE, "zlib"),
          (FLAKY, "crc32c-weak"), (FLAKY, "sha256-weak"), (FLAKY, "memcpy"), (FLAKY, "zlib-weak"))
PAYLOADS = 8
PAYLOAD_LEN = 4096
BATCH = 8
DST_LEN = 8192
# What a worker counts and reports; the parent sums them over every worker.
STAT_KEYS = ("verified", "wrong", "lost", "died", "dropped_by_death", "aborted_by_death",
             "batches", "woken", "slept_to_limit")
# mdev -> (worker id, pid) of every queue a worker made: who to blame for one left open.
OWNERS = {}
# Seconds each worker took from fork to its first batch done.
STARTUPS = []
OPCODE = {"crc32c": kv.WD_OP_CRC32C, "sha256": kv.WD_OP_SHA256, "memcpy": kv.WD_OP_MEMCPY,
          "zlib": kv.WD_OP_DEFLATE}


# --------------------------------------------------------------------------- a worker


class Slot:
    """One of a worker's queues: its buffer holds the payloads, then BATCH dst areas."""

    def __init__(self, parent, tname, say):
        self.parent, self.tname, self.say = parent, tname, say
        self.algo = tname.split("-", 1)[0]
        self.q = None
        self.efd = -1
        self.inflight = {}
        self.retry_at = 0.0

    def open(self, payloads):
        u = str(uuidlib.uuid4())
        self.say(mdev=u)  # before it exists: the parent removes it if we die
        kv.write(f"{kv.type_dir(self.parent, self.tname)}/create", u)
        q = kv.Queue(mdev=u)
        q.own_mdev = True
        efd = os.eventfd(0, os.EFD_NONBLOCK)
        try:
            q.set_eventfd(efd)
            self.buf, self.iova, _ = q.dma_buffer(PAYLOADS * PAYLOAD_LEN + BATCH * DST_LEN,
                                                  b"".join(payloads))
        except BaseException:
            # An open queue is only closed through self.q: one that failed here would
            # keep its device fd for the worker's life, and an unbind waits for it.
            with contextlib.suppress(OSError):
                q.close()
            os.close(efd)
            raise
        self.q, self.efd = q, efd

    def sleep(self, stats):
        """The uapi's "Sleeping": drain, arm, re-check, then wait for the signal of a
        completion (or of death, or of a removal that waits), WAKE_LIMIT at most."""
        q = self.q
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.efd)
        kv.store32(q.db, kv.DB_IRQ_REQUEST, 1)
        kv.full_barrier()
        if q.cq_head == q.cq_tail() and not q.status() & (kv.WD_Q_DEAD | kv.WD_Q_RELEASE):
            woken = select.select([self.efd], [], [], WAKE_LIMIT)[0]
            stats["woken" if woken else "slept_to_limit"] += 1
        kv.store32(q.db, kv.DB_IRQ_REQUEST, 0)

    def close(self):
        if self.q is not None:
            try:
                self.q.close()
            except OSError:
                pass  # the device went away under it
            os.close(self.efd)
        self.q, self.efd = None, -1
        self.inflight = {}


def dying(q):
    """The queue dies within a moment (an aborted request came first)."""
    end = time.monotonic() + 5 * SCALE
    while time.monotonic() < end:
        if q.status() & (kv.WD_Q_DEAD | kv.WD_Q_RELEASE):
            return True
        time.sleep(0.01)
    return False


def worker(wid, w, stop):
    born = time.monotonic()

    def say(**rec):
        data = (json.dumps(rec) + "\n").encode()
        while data:
            data = data[os.write(w, data):]

    rng = random.Random(wid)
    payloads = [os.urandom(PAYLOAD_LEN // 2) + bytes([i]) * (PAYLOAD_LEN // 2)
                for i in range(PAYLOADS)]
    crc = [kv.kernel_crc32c(p) for p in payloads]
    sha = [hashlib.sha256(p).digest() for p in payloads]
    stats = dict.fromkeys(STAT_KEYS, 0)
    slots = [Slot(p, t, say) for p, t in QUEUES]
    last_report = 0.0
    tag = 0

    def verify(s, slot_i, pidx, c):
        if c.status != kv.WD_STS_OK:
            return f"status {c.status}"
        p = payloads[pidx]
        dst = bytes(s.buf[PAYLOADS * PAYLOAD_LEN + slot_i * DST_LEN:][:c.out_len])
        if s.algo == "crc32c":
            return None if c.result == crc[pidx] else "crc"
        if s.algo == "sha256":
            return None if dst[:32] == sha[pidx] and c.out_len == 32 else "sha256"
        if s.algo == "memcpy":
            return None if dst == p else "memcpy"
        return None if zlib.decompress(dst) == p else "deflate"

    while not stop[0]:
        now = time.monotonic()
        for s in slots:
            if s.q is None and now >= s.retry_at:
                try:
                    s.open(payloads)
                except (OSError, AssertionError):
                    if s.parent == STABLE:
                        raise
                    s.close()
                    s.retry_at = now + 0.5  # unbound: try again later
        # Submit a batch on every live queue, then reap them all: many in flight.
        for s in slots:
            if s.q is None:
                continue
            descs = []
            for i in range(BATCH):
                pidx = rng.randrange(PAYLOADS)
                tag = (tag + 1) & 0xFFFFFFFF
                dst = s.iova + PAYLOADS * PAYLOAD_LEN + i * DST_LEN
                descs.append(kv.desc(tag, OPCODE[s.algo], s.iova + pidx * PAYLOAD_LEN,
                                     PAYLOAD_LEN, dst, DST_LEN))
                s.inflight[tag] = (i, pidx)
            try:
                s.q.submit(descs)
            except OSError as e:
                # The kick found the queue dead (its device is being unbound): the reaping
                # below sees WD_Q_DEAD and counts what was in flight as dropped by death.
                if e.errno != errno.ENODEV or s.parent == STABLE:
                    raise
        if not any(s.q for s in slots):
            time.sleep(0.05)
        for s in slots:
            if s.q is None:
                continue
            alive_at = time.monotonic()
            while s.inflight:
                q = s.q
                st = q.status()
                if q.cq_head != q.cq_tail():
                    c = q.reap(1)[0]
                    if c.tag not in s.inflight:
                        stats["wrong"] += 1
                        say(error=f"{s.tname}: completion of a tag never in flight: {c}")
                        continue
                    i, pidx = s.inflight.pop(c.tag)
                    bad = verify(s, i, pidx, c)
                    if c.status == kv.WD_STS_ABORTED and dying(q):
                        stats["aborted_by_death"] += 1  # taken, then its queue died
                    elif bad:
                        stats["wrong"] += 1
                        say(error=f"{s.tname}: wrong result ({bad}): {c}")
                    else:
                        stats["verified"] += 1
                    continue
                if st & (kv.WD_Q_DEAD | kv.WD_Q_RELEASE):
                    stats["died"] += 1
                    stats["dropped_by_death"] += len(s.inflight)
                    s.close()
                    s.retry_at = time.monotonic() + 0.5
                    break
                if time.monotonic() - alive_at > LOST_AFTER:
                    stats["lost"] += len(s.inflight)
                    say(error=f"{s.tname}: {len(s.inflight)} requests lost on a live queue")
                    s.inflight = {}
                    break
                s.sleep(stats)
        stats["batches"] += 1
        if stats["batches"] == 1:
            # From fork to a first batch done: what a replacement costs (8 mdevs made,
            # 8 queues opened, their buffers pinned), which is what paces the kills.
            say(ready=True, startup=round(time.monotonic() - born, 2))
        if time.monotonic() - last_report > 0.5:
            say(stats=stats)
            last_report = time.monotonic()
    for s in slots:
        s.close()
    say(stats=stats, final=True)


def spawn(wid):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        stop = [False]
        signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
        code = 0
        try:
            worker(wid, w, stop)
        except BaseException as e:  # noqa: BLE001  (reported to the parent)
            import traceback
            data = json.dumps({"error": f"worker crashed: {e!r}\n{traceback.format_exc()}"})
            os.write(w, (data + "\n").encode())
            code = 1
        os._exit(code)
    os.close(w)
    os.set_blocking(r, False)
    return {"pid": pid, "fd": r, "buf": b"", "mdevs": [], "ready": False, "stats": {},
            "id": wid}


def pump(wk, errors):
    """Read what a worker said; False at end of file."""
    try:
        chunk = os.read(wk["fd"], 65536)
    except BlockingIOError:
        return True
    if not chunk:
        return False
    wk["buf"] += chunk
    *lines, wk["buf"] = wk["buf"].split(b"\n")
    for line in lines:
        rec = json.loads(line)
        if "mdev" in rec:
            wk["mdevs"].append(rec["mdev"])
            OWNERS[rec["mdev"]] = (wk["id"], wk["pid"])
        if rec.get("ready"):
            wk["ready"] = True
            STARTUPS.append(rec["startup"])
        if "stats" in rec:
            wk["stats"] = rec["stats"]
        if "error" in rec:
            errors.append(f"worker {wk['id']}: {rec['error']}")
    return True


def drain(wk, errors):
    while pump(wk, errors):
        select.select([wk["fd"]], [], [], 1.0)
    os.close(wk["fd"])


def remove_mdevs(uuids):
    for u in uuids:
        end = time.monotonic() + UNBIND_LIMIT
        while os.path.exists(f"{kv.MDEV_DEVICES}/{u}"):
            try:
                kv.remove_mdev(u)
            except OSError:
                pass
            if time.monotonic() > end:
                raise AssertionError(f"mdev {u} of a killed process cannot be removed")
            time.sleep(0.05)


def vfio_device_holders():
    """{pid: (open fds, mappings)} of the processes that hold a VFIO device open."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = sum(os.readlink(f"/proc/{pid}/fd/{fd}").endswith("[vfio-device]")
                      for fd in os.listdir(f"/proc/{pid}/fd"))
            with open(f"/proc/{pid}/maps") as f:
                maps = sum("[vfio-device]" in line for line in f)
        except OSError:
            continue
        if fds or maps:
            out[int(pid)] = (fds, maps)
    return out


def open_queues(owners):
    """Every queue debugfs does not show closed: "parent/mdev state (worker id, pid, alive)"."""
    out = []
    for parent in sorted(os.listdir(kv.DEBUGFS)):
        pdir = os.path.join(kv.DEBUGFS, parent)
        for name in sorted(os.listdir(pdir)) if os.path.isdir(pdir) else ():
            try:
                state = kv.read(os.path.join(pdir, name, "state"))
            except OSError:
                continue
            if state != "closed":
                wid, pid = owners.get(name, (None, None))
                alive = pid is not None and os.path.exists(f"/proc/{pid}")
                out.append(f"{parent}/{name} {state} (worker {wid}, pid {pid}, "
                           f"{'alive' if alive else 'gone'})")
    return out


# Where a task that only waits for its children, a pipe, a poll, a lock in user space,
# the clock or work (kernel threads) sleeps: the innermost frame of its kernel stack.
IDLE_FRAMES = frozenset((
    "do_wait", "pipe_read", "do_select", "do_sys_poll", "do_nanosleep", "hrtimer_nanosleep",
    "ep_poll", "futex_wait_queue", "futex_wait", "worker_thread", "kthreadd", "rcu_gp_kthread",
    "smpboot_thread_fn", "rescuer_thread", "devtmpfsd", "kthread_worker_fn", "oom_reaper",
    "kcompactd", "kswapd", "scsi_error_handler", "rcu_tasks_kthread", "khugepaged",
    "kauditd_thread", "irq_thread", "watchdog", "kjournald2", "rcu_tasks_trace_kthread",
))


def sleeping_tasks():
    """The kernel stack of every task asleep in the kernel (S or D) but not idle (a kernel
    worker blocked in a work item shows: only its innermost frame is judged)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for tid in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else ():
            base = f"/proc/{pid}/task/{tid}"
            try:
                with open(f"{base}/stat") as f:
                    stat = f.read()
                with open(f"{base}/stack") as f:
                    frames = [line.split()[1].split("+")[0] for line in f if line.strip()]
            except (OSError, IndexError):
                continue
            comm, state = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2]
            if state not in "SD" or not frames or frames[0] in IDLE_FRAMES:
                continue
            out.append(f"{pid}/{tid} {comm} {state}: {' < '.join(frames[:12])}")
    return out


def blocked_tasks_to_the_log(why):
    """A wait ran out: the kernel's stacks of every blocked task go to its log (sysrq w),
    which the harness shows with the test; the message says who holds VFIO devices open,
    which queues are not closed and whose they are, and where every sleeping task sleeps.
    The test fails now, not at its limit."""
    try:
        kv.write("/proc/sysrq-trigger", "w")
    except OSError as e:
        why += f" (no stacks: sysrq: {e})"
    lines = [f"{why}; VFIO devices held by pid: (fds, mappings) {vfio_device_holders()}",
             "queues not closed:", *open_queues(OWNERS),
             "tasks asleep in the kernel:", *sleeping_tasks()]
    return "\n    ".join(lines)


def rebinder(stop, record, errors):
    """Unbind wd_dummy.1 (waits for its users to let go), bind it again, repeat."""
    while not stop.wait(UNBIND_PERIOD):
        t0 = time.monotonic()
        done = threading.Event()

        def unbind(done=done):
            try:
                kv.write(f"{DRIVER}/unbind", FLAKY)
            except OSError as e:
                errors.append(f"unbind: {e}")
            done.set()
        threading.Thread(target=unbind, daemon=True).start()
        if not done.wait(UNBIND_LIMIT):
            errors.append(blocked_tasks_to_the_log(
                f"unbind of {FLAKY} still blocked after {UNBIND_LIMIT:.0f} s"))
            return
        record.append(time.monotonic() - t0)
        time.sleep(1.0)
        kv.write(f"{DRIVER}/bind", FLAKY)


@pytest.mark.slow(int(SECONDS * 4 + 300))
def test_load_with_kills_and_rebinds():
    pool = {p: {t: kv.read(f"{kv.MDEV_BUS}/{p}/mdev_supported_types/{t}/available_instances")
                for t in os.listdir(f"{kv.MDEV_BUS}/{p}/mdev_supported_types")}
            for p in kv.parents()}
    errors, unbinds = [], []
    totals = dict.fromkeys(STAT_KEYS, 0)
    kills, next_id = 0, WORKERS
    workers = [spawn(i) for i in range(WORKERS)]
    stop = threading.Event()
    rb = threading.Thread(target=rebinder, args=(stop, unbinds, errors), daemon=True)
    rb.start()
    t0 = time.monotonic()
    interval = SECONDS / KILLS
    next_kill = t0 + interval
    rng = random.Random(0)

    lock = threading.Lock()
    reapers = []

    def account(wk):
        with lock:
            for k in totals:
                totals[k] += wk["stats"].get(k, 0)

    def bury(wk):
        try:
            os.waitpid(wk["pid"], 0)
            drain(wk, errors)
            account(wk)
            remove_mdevs(wk["mdevs"])
        except BaseException as e:  # noqa: BLE001  (the test fails on it)
            errors.append(f"reaping worker {wk['id']}: {e!r}")

    try:
        while not errors:
            now = time.monotonic()
            if (now - t0 >= SECONDS and kills >= KILLS) or now - t0 >= 4 * SECONDS * SCALE:
                break
            select.select([wk["fd"] for wk in workers], [], [], 0.05)
            for wk in workers:
                if not pump(wk, errors):
                    errors.append(f"worker {wk['id']} exited early")
            if now < next_kill:
                continue
            # Ready: its first batch is done, every queue open, and it submits the next at
            # once, so a kill finds requests in flight.
            ready = [wk for wk in workers if wk["ready"]]
            if not ready:
                continue
            victim = rng.choice(ready)
            os.kill(victim["pid"], signal.SIGKILL)
            kills += 1
            next_kill = time.monotonic() + interval
            # Its exit (closing 8 queues) and the removal of its mdevs take a while
            # under TCG: a reaper waits for them while the load goes on.
            reaper = threading.Thread(target=bury, args=(victim,), daemon=True)
            reaper.start()
            reapers.append(reaper)
            workers[workers.index(victim)] = spawn(next_id)
            next_id += 1
    finally:
        stop.set()
        deadline = time.monotonic() + UNBIND_LIMIT * 2
        for reaper in reapers:
            reaper.join(max(0.0, deadline - time.monotonic()))
        rb.join(max(0.0, deadline + UNBIND_LIMIT - time.monotonic()))
        stuck = sum(r.is_alive() for r in reapers) + rb.is_alive()
        if stuck:
            errors.append(blocked_tasks_to_the_log(
                f"{stuck} reaper/rebinder thread(s) still blocked after {UNBIND_LIMIT * 2:.0f} s"))
            for wk in workers:  # no worker outlives the test into the next one
                with contextlib.suppress(ProcessLookupError):
                    os.kill(wk["pid"], signal.SIGKILL)
            raise AssertionError("\n".join(errors[:10]))
        if not os.path.exists(f"{kv.MDEV_BUS}/{FLAKY}"):
            kv.write(f"{DRIVER}/bind", FLAKY)
        for wk in workers:
            os.kill(wk["pid"], signal.SIGTERM)
        for wk in workers:
            drain(wk, errors)
            os.waitpid(wk["pid"], 0)
            account(wk)
            remove_mdevs(wk["mdevs"])
    elapsed = time.monotonic() - t0
    wd_measure.record("load", seconds=round(elapsed), processes=WORKERS, queues=len(QUEUES), kills=kills,
                      unbinds=len(unbinds), unbind_max_s=round(max(unbinds, default=0), 1),
                      start_median_s=statistics.median(STARTUPS or [0]), start_max_s=max(STARTUPS, default=0),
                      **totals)
    assert not errors, "\n".join(errors[:10])
    assert totals["wrong"] == 0 and totals["lost"] == 0
    assert kills >= KILLS, f"only {kills} kills in {elapsed:.0f} s"
    assert unbinds, "the device was never unbound"
    assert totals["verified"] > 0
    assert totals["woken"] > 0, "no worker was ever woken by its eventfd"
    # Everything back.
    end = time.monotonic() + 30 * SCALE
    while os.listdir(kv.MDEV_DEVICES) and time.monotonic() < end:
        time.sleep(0.1)
    assert os.listdir(kv.MDEV_DEVICES) == [], "mdevs left"
    assert kv.dbg("pinned_pages") == 0
    now_pool = {p: {t: kv.read(f"{kv.MDEV_BUS}/{p}/mdev_supported_types/{t}/available_instances")
                    for t in os.listdir(f"{kv.MDEV_BUS}/{p}/mdev_supported_types")}
                for p in kv.parents()}
    assert now_pool == pool, "queues not back in the pool"
    for parent in (STABLE, FLAKY):
        with kv.Queue(parent, "crc32c") as q:
            data = b"after the load" * 100
            _, iova, _ = q.dma_buffer(len(data), data)
            c = q.run(kv.WD_OP_CRC32C, iova, len(data))
            assert c.status == 0 and c.result == kv.kernel_crc32c(data)
    assert not kv.kmemleak_of_ours(), "kmemleak: WrapDrive objects leaked"
