"""In-guest: which device a queue lands on (priority, NUMA node, out-of-range
priority, fall-back on exhaustion) and reclaiming queues of dead processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator

import pytest

try:
    import wrapdrive
except ImportError:  # run from the repo root without an install
    sys.path.insert(0, os.path.join(os.getcwd(), "userlib", "src"))
    import wrapdrive

from wrapdrive import sysfs

BUS = "/sys/class/mdev_bus"
MDEV_DEVICES = "/sys/bus/mdev/devices"
DEVS = ("wd_dummy.0", "wd_dummy.1")


def prio_path(dev: str) -> str:
    return f"{BUS}/{dev}/priority"


def read_prio(dev: str) -> int:
    with open(prio_path(dev)) as f:
        return int(f.read())


def write_prio(dev: str, value: int) -> None:
    with open(prio_path(dev), "w") as f:
        f.write(f"{value}\n")


@pytest.fixture(autouse=True)
def restore_state() -> Iterator[None]:
    saved = {d: read_prio(d) for d in DEVS}
    affinity = os.sched_getaffinity(0)
    yield
    for d, p in saved.items():
        write_prio(d, p)
    os.sched_setaffinity(0, affinity)


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def test_guest_has_two_numa_nodes_and_devices() -> None:
    assert sysfs.node_cpus() == {0: {0}, 1: {1}}
    d = sysfs.node_distances()
    assert d[0][0] < d[0][1] and d[1][1] < d[1][0]
    devs = {x.name: x for x in wrapdrive.devices()}
    assert set(DEVS) <= set(devs)
    assert (devs["wd_dummy.0"].numa_zone, devs["wd_dummy.1"].numa_zone) == (0, 1)


def test_smaller_priority_wins() -> None:
    write_prio("wd_dummy.0", 10)
    write_prio("wd_dummy.1", 20)
    for cpu in (0, 1):  # even from node 1's CPU, priority comes first
        with pinned(cpu), wrapdrive.request_queue("sha256") as q:
            assert q.parent == "wd_dummy.0"
    write_prio("wd_dummy.0", 30)
    with wrapdrive.request_queue("sha256") as q:
        assert q.parent == "wd_dummy.1"


@pytest.mark.parametrize("cpu", [0, 1])
def test_equal_priority_goes_to_the_callers_node(cpu: int) -> None:
    write_prio("wd_dummy.0", 50)
    write_prio("wd_dummy.1", 50)
    with pinned(cpu), wrapdrive.request_queue("crc32c") as q:
        assert q.parent == f"wd_dummy.{cpu}"
        assert q.numa_zone == cpu


@pytest.mark.parametrize("bad", [0, 101])
def test_out_of_range_priority_is_never_chosen(bad: int) -> None:
    write_prio("wd_dummy.0", bad)
    write_prio("wd_dummy.1", 100)
    assert read_prio("wd_dummy.0") == bad
    for cpu in (0, 1):
        with pinned(cpu), wrapdrive.request_queue("zlib") as q:
            assert q.parent == "wd_dummy.1"
    write_prio("wd_dummy.1", bad)
    with pytest.raises(wrapdrive.NoDeviceError) as ei:
        wrapdrive.request_queue("zlib")
    assert "never selected" in str(ei.value) and "wd_dummy.0" in str(ei.value)


def test_unknown_capability_lists_what_exists() -> None:
    with pytest.raises(wrapdrive.NoDeviceError) as ei:
        wrapdrive.request_queue("aes-gcm")
    msg = str(ei.value)
    assert "'aes-gcm'" in msg and "wd_dummy.0" in msg and "sha256" in msg


def _type_dir(dev: str, t: str) -> str:
    return f"{BUS}/{dev}/mdev_supported_types/wd_dummy-{t}"


MODDIR = os.environ.get("WD_MODULE_DIR", "")
FEW = 3  # queues per device while the exhaustion test runs


@contextlib.contextmanager
def few_queues_per_device() -> Iterator[None]:
    """Reload wd_dummy with max_queues=FEW (all types of a device together),
    so exhausting a device takes a few mdevs, not 4096."""
    assert MODDIR, "WD_MODULE_DIR is not set"
    assert subprocess.run(["rmmod", "wd_dummy"]).returncode == 0, "a queue is still open"
    try:
        assert subprocess.run(["insmod", f"{MODDIR}/wd_dummy.ko",
                               f"max_queues={FEW}"]).returncode == 0
        yield
    finally:
        subprocess.run(["rmmod", "wd_dummy"])
        assert subprocess.run(["insmod", f"{MODDIR}/wd_dummy.ko"]).returncode == 0


@pytest.mark.slow
def test_falls_back_when_the_best_device_is_exhausted() -> None:
    """Fill wd_dummy.0 to its last queue with foreign mdevs (reclaim must
    leave them alone), then a request lands on wd_dummy.1 although
    wd_dummy.0 ranks first; when wd_dummy.1 is full too, the error says so."""
    with few_queues_per_device():
        write_prio("wd_dummy.0", 10)
        write_prio("wd_dummy.1", 20)
        made: list[str] = []
        try:
            for _ in range(FEW):
                name = str(uuid.uuid4())
                with open(f"{_type_dir('wd_dummy.0', 'memcpy')}/create", "w") as f:
                    f.write(name)
                made.append(name)
            with open(f"{_type_dir('wd_dummy.0', 'sha256')}/available_instances") as f:
                assert int(f.read()) == 0
            with wrapdrive.request_queue("sha256") as q:
                assert q.parent == "wd_dummy.1"
                assert q.sha256(b"abc").hex().startswith("ba7816bf")
            for _ in range(FEW):
                name = str(uuid.uuid4())
                with open(f"{_type_dir('wd_dummy.1', 'memcpy')}/create", "w") as f:
                    f.write(name)
                made.append(name)
            with pytest.raises(wrapdrive.QueueExhaustedError, match="out of queues"):
                wrapdrive.request_queue("sha256")
        finally:
            for name in made:
                with open(f"{MDEV_DEVICES}/{name}/remove", "w") as f:
                    f.write("1")
        with wrapdrive.request_queue("sha256") as q:
            assert q.parent == "wd_dummy.0"


CHILD = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, os.path.join(os.getcwd(), "userlib", "src"))
    import wrapdrive
    q = wrapdrive.request_queue("memcpy")
    assert q.copy(b"hi") == b"hi"
    print(q.name, flush=True)
    if sys.argv[1] == "die":
        os._exit(0)          # dies without wd_release_queue
    sys.stdin.read()          # stays alive, holding the queue, until told
""")


def _child(mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=os.getcwd())


@pytest.mark.slow(300)
def test_queue_of_a_dead_process_is_reclaimed_not_leaked() -> None:
    dead = _child("die")
    name = dead.stdout.readline().strip() if dead.stdout else ""
    dead.wait(timeout=60)
    assert sysfs.is_ours(name)
    assert os.path.exists(f"{MDEV_DEVICES}/{name}"), "the dead process's mdev should remain"
    alive = _child("live")
    try:
        live_name = alive.stdout.readline().strip() if alive.stdout else ""
        with wrapdrive.request_queue("memcpy") as q:
            assert q.copy(b"x") == b"x"
        assert not os.path.exists(f"{MDEV_DEVICES}/{name}"), "leftover queue not reclaimed"
        assert os.path.exists(f"{MDEV_DEVICES}/{live_name}"), "a live process's queue was taken"
    finally:
        if alive.stdin:
            alive.stdin.close()
        alive.wait(timeout=60)
    assert alive.returncode == 0


def test_foreign_unopened_mdev_is_left_alone() -> None:
    tdir = _type_dir("wd_dummy.1", "zlib")
    name = str(uuid.uuid4())
    with open(f"{tdir}/create", "w") as f:
        f.write(name)
    try:
        with wrapdrive.request_queue("zlib"):
            pass
        assert os.path.exists(f"{MDEV_DEVICES}/{name}")
    finally:
        with open(f"{MDEV_DEVICES}/{name}/remove", "w") as f:
            f.write("1")
