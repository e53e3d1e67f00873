"""In-guest, edu machines only: the userlib (through libwd, its C hot path) finds QEMU's
edu device and selects it like any WrapDrive device, by priority; copies through it are
byte-exact and leave nothing mapped or pinned."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import pytest

try:
    import wrapdrive
except ImportError:  # run from the repo root without an install
    sys.path.insert(0, os.path.join(os.getcwd(), "userlib", "src"))
    import wrapdrive

sys.path.insert(0, os.path.dirname(__file__))
import edu  # noqa: E402

pytestmark = edu.need_edu

BUS = "/sys/class/mdev_bus"


def prio_path(dev: str) -> str:
    return f"{BUS}/{dev}/priority"


@contextlib.contextmanager
def priorities(values: dict[str, int]) -> Iterator[None]:
    """Set devices' priorities for a while; the old ones after."""
    old = {}
    for dev, value in values.items():
        with open(prio_path(dev)) as f:
            old[dev] = f.read().strip()
        with open(prio_path(dev), "w") as f:
            f.write(f"{value}\n")
    try:
        yield
    finally:
        for dev, value in old.items():
            with open(prio_path(dev), "w") as f:
                f.write(f"{value}\n")


def test_listed_like_any_device() -> None:
    dev = edu.parent()
    found = {d.name: d for d in wrapdrive.devices()}
    assert dev in found, f"{dev} not among {sorted(found)}"
    d = found[dev]
    assert [t.algo_type for t in d.types] == ["memcpy"]
    assert d.priority is not None and 1 <= d.priority <= 100
    assert d.numa_zone is not None and d.numa_zone >= 0


def test_selected_by_priority() -> None:
    dev = edu.parent()
    dummies = [d for d in os.listdir(BUS) if d.startswith("wd_dummy.")]
    # Its default priority (50) leaves memcpy to the faster dummy devices.
    with wrapdrive.request_queue("memcpy") as q:
        assert q.parent != dev
    with priorities({dev: 1}):
        before = edu.counters(dev)
        with wrapdrive.request_queue("memcpy") as q:
            assert q.parent == dev
            for n in (0, 1, 5000):
                data = os.urandom(n)
                assert q.copy(data) == data, n
        d = edu.delta(before, edu.counters(dev))
        assert d["requests"] == 3 and d["dmas"] >= 4 and d["irqs"] == d["dmas"], d
    # Out of range takes the others out of selection: the edu device is what is left.
    with priorities({d: 101 for d in dummies}):
        with wrapdrive.request_queue("memcpy") as q:
            assert q.parent == dev
    assert edu.released(dev) == []


def test_buffers_shared_with_the_device() -> None:
    dev = edu.parent()
    with priorities({dev: 1}), wrapdrive.request_queue("memcpy") as q:
        src, dst = q.alloc(3 * 4096), q.alloc(3 * 4096)
        data = os.urandom(2 * 4096 + 123)
        src.write(data)
        q.memcpy(dst, src, len(data))
        assert dst.read(len(data)) == data
        assert edu.released(dev) == []
        with pytest.raises(wrapdrive.RequestFailedError):  # dst too small: WD_STS_NOSPC
            q.run(wrapdrive.Request(wrapdrive.WD_OP_MEMCPY, src.addr, 10, dst.addr, 5))
        assert edu.released(dev) == []
