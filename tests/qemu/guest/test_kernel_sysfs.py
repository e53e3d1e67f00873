"""sysfs contract of wrapdrive.ko + wd_dummy.ko (runs in the guest, as root)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from kernel_vfio import MDEV_BUS, MDEV_DEVICES, create_mdev, read, remove_mdev, type_dir, write  # noqa: E402

TYPES = {
    "memcpy": ("memcpy", 0), "crc32c": ("crc32c", 0), "sha256": ("sha256", 0),
    "zlib": ("zlib", 0), "crc32c-weak": ("crc32c", 2), "sha256-weak": ("sha256", 2),
    "zlib-weak": ("zlib", 2), "sha256-sva": ("sha256", 1), "memcpy-sva": ("memcpy", 1),
}


def test_parents_and_device_attrs():
    assert sorted(os.listdir(MDEV_BUS)) == ["wd_dummy.0", "wd_dummy.1"]
    assert read(f"{MDEV_BUS}/wd_dummy.0/numa_zone") == "0"
    assert read(f"{MDEV_BUS}/wd_dummy.1/numa_zone") == "1"
    assert read(f"{MDEV_BUS}/wd_dummy.0/priority") == "10"
    assert read(f"{MDEV_BUS}/wd_dummy.1/priority") == "20"
    assert oct(os.stat(f"{MDEV_BUS}/wd_dummy.0/numa_zone").st_mode & 0o777) == "0o444"
    assert oct(os.stat(f"{MDEV_BUS}/wd_dummy.0/priority").st_mode & 0o777) == "0o644"


@pytest.mark.parametrize("parent", ["wd_dummy.0", "wd_dummy.1"])
def test_types(parent):
    names = sorted(os.listdir(f"{MDEV_BUS}/{parent}/mdev_supported_types"))
    assert names == sorted(f"wd_dummy-{t}" for t in TYPES)
    for t, (algo, flags) in TYPES.items():
        d = type_dir(parent, t)
        assert read(f"{d}/capabilities/algo_type") == algo
        assert read(f"{d}/capabilities/flags") == f"0x{flags:08x}"
        assert read(f"{d}/device_api") == "vfio-platform"
        assert read(f"{d}/available_instances") == "4096"
        assert read(f"{d}/name")


def test_priority_write_validation():
    p = f"{MDEV_BUS}/wd_dummy.0/priority"
    try:
        for bad in ("abc", "1.5", "0x", "\n", "99999999999"):
            fd = os.open(p, os.O_WRONLY)
            try:
                with pytest.raises(OSError) as e:
                    os.write(fd, bad.encode())
                assert e.value.errno in (22, 34), bad
            finally:
                os.close(fd)
        for val in ("0", "101", "-5", "1", "100", "42"):
            write(p, val)
            assert read(p) == val
    finally:
        write(p, "10")


def test_create_remove_available_instances():
    d = type_dir("wd_dummy.0", "crc32c")
    other = type_dir("wd_dummy.0", "sha256")
    u1 = create_mdev("wd_dummy.0", "crc32c")
    u2 = create_mdev("wd_dummy.0", "sha256")
    try:
        assert read(f"{d}/available_instances") == "4094"
        assert read(f"{other}/available_instances") == "4094"
        assert read(f"{type_dir('wd_dummy.1', 'crc32c')}/available_instances") == "4096"
        assert os.path.exists(f"{d}/devices/{u1}")
        assert os.path.basename(os.readlink(f"{MDEV_DEVICES}/{u1}/mdev_type")) == "wd_dummy-crc32c"
    finally:
        remove_mdev(u1)
        remove_mdev(u2)
    assert read(f"{d}/available_instances") == "4096"


# A device's pool: 4,096 queues, all types together.  The production kernels' sessions fill
# it whole; vm-debug makes $WD_POOL_QUEUES of them, because under KASAN, lockdep and TCG each
# mdev (and its iommu group) costs more the more there are: 0.1 s at first, 0.4 s at 2,500.
# test_max_queues_parameter fills a smaller pool there.
POOL = 4096
POOL_QUEUES = int(os.environ.get("WD_POOL_QUEUES", str(POOL)))


@pytest.mark.slow
def test_4096_queues():
    assert 0 < POOL_QUEUES <= POOL, f"WD_POOL_QUEUES={POOL_QUEUES}: 1 to {POOL}"
    d = type_dir("wd_dummy.1", "memcpy")
    made = []
    try:
        for _ in range(POOL_QUEUES):
            made.append(create_mdev("wd_dummy.1", "memcpy"))
        assert read(f"{d}/available_instances") == str(POOL - POOL_QUEUES)
        assert read(f"{type_dir('wd_dummy.1', 'zlib')}/available_instances") == str(POOL - POOL_QUEUES)
        if POOL_QUEUES == POOL:
            with pytest.raises(OSError):
                create_mdev("wd_dummy.1", "zlib")
    finally:
        for u in made:
            remove_mdev(u)
    print(f"[pool] {len(made)} of {POOL} queues made and removed")
    assert read(f"{d}/available_instances") == str(POOL)
