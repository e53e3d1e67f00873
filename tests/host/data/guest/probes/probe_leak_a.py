"""Probe: a file that leaves an mdev behind (the in-guest conftest must name it)."""

import os
import uuid

PARENT = "/sys/class/mdev_bus/wd_dummy.0/mdev_supported_types/wd_dummy-crc32c"


def test_leaves_an_mdev() -> None:
    u = str(uuid.uuid4())
    with open(os.path.join(PARENT, "create"), "w") as f:
        f.write(u)
    assert os.path.exists(f"/sys/bus/mdev/devices/{u}")
