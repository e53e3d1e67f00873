"""Discovery, ranking, NUMA distance, fall-back, reclaim and error messages
against fake sysfs trees (no VM, no root).  Ranking, creation and reclaim are
libwd's C code (select.c) called through the cffi binding: the same code
wd_request_queue runs, in C programs and in Python."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from fakesysfs import FakeDevice, FakeType, build
from wrapdrive import errors, selection, sysfs
from wrapdrive.abi import WD_CAPA_SHARE_ALL, WD_WEAK_ORDER
from wrapdrive.selection import Capa, rank

DIST = {0: [10, 20], 1: [20, 10]}


def dummy_types(available: int = 16) -> list[FakeType]:
    return [
        FakeType("memcpy", "memcpy", 0, available),
        FakeType("crc32c", "crc32c", 0, available),
        FakeType("sha256", "sha256", 0, available),
        FakeType("zlib", "zlib", 0, available),
        FakeType("crc32c-weak", "crc32c", WD_WEAK_ORDER, available),
        FakeType("sha256-sva", "sha256", WD_CAPA_SHARE_ALL, available),
        FakeType("memcpy-sva", "memcpy", WD_CAPA_SHARE_ALL, available),
    ]


def two_devices(tmp_path: Path, prio0: int = 10, prio1: int = 20,
                avail0: int = 16, avail1: int = 16) -> Path:
    return build(tmp_path, [
        FakeDevice("wd_dummy.0", 0, prio0, types=dummy_types(avail0)),
        FakeDevice("wd_dummy.1", 1, prio1, types=dummy_types(avail1)),
    ], distances=DIST, cpus={0: "0", 1: "1"})


def test_scan_reads_devices_types_and_capabilities(tmp_path: Path) -> None:
    root = two_devices(tmp_path)
    devs = sysfs.scan(root)
    assert [d.name for d in devs] == ["wd_dummy.0", "wd_dummy.1"]
    d0 = devs[0]
    assert (d0.numa_zone, d0.priority, d0.selectable) == (0, 10, True)
    names = {t.name: t for t in d0.types}
    assert set(names) == {f"wd_dummy-{n}" for n in
                          ("memcpy", "crc32c", "sha256", "zlib", "crc32c-weak",
                           "sha256-sva", "memcpy-sva")}
    assert names["wd_dummy-crc32c-weak"].flags == WD_WEAK_ORDER
    assert names["wd_dummy-sha256-sva"].flags == WD_CAPA_SHARE_ALL
    assert names["wd_dummy-sha256"].algo_type == "sha256"
    assert names["wd_dummy-sha256"].available_instances == 16


def test_types_without_capabilities_are_not_wrapdrive(tmp_path: Path) -> None:
    root = two_devices(tmp_path)
    other = tmp_path / "devices/platform/mtty/mdev_supported_types/mtty-1"
    other.mkdir(parents=True)
    os.symlink(tmp_path / "devices/platform/mtty", tmp_path / "class/mdev_bus/mtty")
    assert [d.name for d in sysfs.scan(root)] == ["wd_dummy.0", "wd_dummy.1"]


def test_priority_decides_first(tmp_path: Path) -> None:
    root = two_devices(tmp_path, prio0=30, prio1=20)
    best = rank(Capa("sha256"), 0, root)[0]
    assert best.parent == "wd_dummy.1"  # smaller priority wins over NUMA distance


@pytest.mark.parametrize("bad", [0, 101, -1, 1000])
def test_out_of_range_priority_is_never_chosen(tmp_path: Path, bad: int) -> None:
    root = two_devices(tmp_path, prio0=bad, prio1=100)
    ranked = rank(Capa("sha256"), 0, root)
    assert {c.parent for c in ranked} == {"wd_dummy.1"}
    root = two_devices(tmp_path, prio0=bad, prio1=bad)
    assert rank(Capa("sha256"), 0, root) == []


def test_priority_bounds_are_inclusive(tmp_path: Path) -> None:
    root = two_devices(tmp_path, prio0=1, prio1=100)
    ranked = rank(Capa("sha256"), 1, root)
    assert [(c.parent, c.mdev_type) for c in ranked] == [
        ("wd_dummy.0", "wd_dummy-sha256"), ("wd_dummy.0", "wd_dummy-sha256-sva"),
        ("wd_dummy.1", "wd_dummy-sha256"), ("wd_dummy.1", "wd_dummy-sha256-sva")]


@pytest.mark.parametrize(("node", "expected"), [(0, "wd_dummy.0"), (1, "wd_dummy.1")])
def test_numa_distance_breaks_priority_ties(tmp_path: Path, node: int, expected: str) -> None:
    root = two_devices(tmp_path, prio0=10, prio1=10)
    assert rank(Capa("sha256"), node, root)[0].parent == expected


def test_free_instances_break_distance_ties(tmp_path: Path) -> None:
    root = two_devices(tmp_path, prio0=10, prio1=10, avail0=3, avail1=9)
    assert rank(Capa("crc32c"), None, root)[0].parent == "wd_dummy.1"


def test_weak_order_type_only_when_allowed(tmp_path: Path) -> None:
    root = two_devices(tmp_path)
    strict = rank(Capa("crc32c"), 0, root)
    assert all(not c.flags & WD_WEAK_ORDER for c in strict)
    assert {c.mdev_type for c in strict} == {"wd_dummy-crc32c"}
    weak = rank(Capa("crc32c", WD_WEAK_ORDER), 0, root)
    assert {c.mdev_type for c in weak} == {"wd_dummy-crc32c", "wd_dummy-crc32c-weak"}
    assert weak[0].mdev_type == "wd_dummy-crc32c-weak"  # asked for: preferred


def test_flags_must_cover_the_request(tmp_path: Path) -> None:
    root = two_devices(tmp_path)
    sva = rank(Capa("sha256", WD_CAPA_SHARE_ALL), 0, root)
    assert {c.mdev_type for c in sva} == {"wd_dummy-sha256-sva"}
    assert rank(Capa("zlib", WD_CAPA_SHARE_ALL), 0, root) == []
    # the exact type is preferred over one with extra, unrequested flags
    assert rank(Capa("sha256"), 0, root)[0].mdev_type == "wd_dummy-sha256"


def test_numa_tables_and_calling_node(tmp_path: Path) -> None:
    root = two_devices(tmp_path)
    assert sysfs.node_distances(root) == DIST
    assert sysfs.node_cpus(root) == {0: {0}, 1: {1}}
    assert sysfs.cpu_node({1}, 0, root) == 1  # pinned to node 1's CPU: node 1
    assert sysfs.cpu_node({0, 1}, 1, root) == 1  # spread: the CPU it runs on
    assert sysfs.cpu_node({0, 1}, None, tmp_path / "nowhere") is None
    dist = {(c.parent, node): c.distance for node in (0, 1)
            for c in rank(Capa("sha256"), node, root)}
    assert dist == {("wd_dummy.0", 0): 10, ("wd_dummy.0", 1): 20,
                    ("wd_dummy.1", 0): 20, ("wd_dummy.1", 1): 10}
    assert {c.distance for c in rank(Capa("sha256"), None, root)} == {0}  # node unknown


def test_calling_node_from_the_c_library(tmp_path: Path) -> None:
    root = two_devices(tmp_path)
    cpu = os.sched_getaffinity(0)
    node = selection.calling_node(root)
    if cpu <= {0}:
        assert node == 0
    elif cpu <= {1}:
        assert node == 1
    else:  # spread over both: the node of the CPU it runs on, if it is 0 or 1
        assert node in (0, 1, None)
    assert selection.calling_node(tmp_path / "nowhere") is None


def test_cpulist_parsing() -> None:
    assert sysfs._parse_cpulist("0-3,8,10-11") == {0, 1, 2, 3, 8, 10, 11}
    assert sysfs._parse_cpulist("") == set()


def created(root: Path, dev: str, sysfs_name: str) -> str:
    return (root / "devices/platform" / dev / "mdev_supported_types" /
            f"wd_dummy-{sysfs_name}" / "create").read_text()


def test_create_writes_an_owned_uuid_to_the_best_type(tmp_path: Path) -> None:
    root = two_devices(tmp_path)
    cand, name = selection.create_queue_mdev(Capa("sha256"), root, node=1)
    assert cand.parent == "wd_dummy.0"  # priority 10 beats being near node 1
    assert created(root, "wd_dummy.0", "sha256") == name
    assert sysfs.is_ours(name) and sysfs.creator_pid(name) == os.getpid()


def test_falls_back_when_best_has_no_free_instances(tmp_path: Path) -> None:
    root = two_devices(tmp_path, avail0=0)
    cand, name = selection.create_queue_mdev(Capa("sha256"), root, node=0)
    assert cand.parent == "wd_dummy.1"
    assert created(root, "wd_dummy.1", "sha256") == name
    assert created(root, "wd_dummy.0", "sha256") == ""


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT, errno.EUSERS])
def test_falls_back_when_create_reports_exhaustion(tmp_path: Path, err: int) -> None:
    root = two_devices(tmp_path)
    tried = []

    def create(path: Path, name: str) -> None:
        tried.append(path.parent.parent.parent.name)
        if "wd_dummy.0" in str(path):
            raise OSError(err, os.strerror(err))
        path.write_text(name)

    cand, name = selection.create_queue_mdev(Capa("zlib"), root, node=0, create=create)
    assert cand.parent == "wd_dummy.1"
    assert tried == ["wd_dummy.0", "wd_dummy.1"]
    assert created(root, "wd_dummy.1", "zlib") == name


def test_all_exhausted_is_a_clear_error(tmp_path: Path) -> None:
    root = two_devices(tmp_path, avail0=0, avail1=0)
    with pytest.raises(errors.QueueExhaustedError, match="out of queues"):
        selection.create_queue_mdev(Capa("zlib"), root, node=0)


def test_create_permission_error_points_at_udev(tmp_path: Path) -> None:
    root = two_devices(tmp_path)

    def create(path: Path, name: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(errors.DevicePermissionError, match="udev") as ei:
        selection.create_queue_mdev(Capa("zlib"), root, node=0, create=create)
    assert "wd_dummy-zlib" in str(ei.value)  # names what it tried to write


def test_other_create_errors_are_not_taken_for_exhaustion(tmp_path: Path) -> None:
    root = two_devices(tmp_path)

    def create(path: Path, name: str) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    with pytest.raises(errors.VfioError) as ei:
        selection.create_queue_mdev(Capa("zlib"), root, node=0, create=create)
    assert ei.value.errno == errno.EINVAL


def test_no_device_message_lists_what_exists(tmp_path: Path) -> None:
    root = two_devices(tmp_path, prio1=0)
    with pytest.raises(errors.NoDeviceError) as ei:
        selection.create_queue_mdev(Capa("aes"), root, node=0)
    msg = str(ei.value)
    assert "'aes'" in msg
    assert "wd_dummy.0" in msg and "sha256[0x0]" in msg and "crc32c[0x2]" in msg
    assert "never selected" in msg  # wd_dummy.1 has priority 0
    with pytest.raises(errors.NoDeviceError, match="is a WrapDrive driver"):
        selection.create_queue_mdev(Capa("sha256"), tmp_path / "empty", node=0)


def test_vfio_permission_error_points_at_udev() -> None:
    e = errors.os_error(PermissionError(errno.EACCES, "Permission denied"), "open /dev/vfio/3")
    assert isinstance(e, errors.DevicePermissionError)
    assert isinstance(e, PermissionError)
    assert "/dev/vfio/3" in str(e) and "udev" in str(e) and "wrapdrive setup" in str(e)
    assert isinstance(errors.os_error(OSError(errno.ENODEV, "x"), "ioctl"),
                      errors.QueueDeadError)
    other = errors.os_error(OSError(errno.EINVAL, "Invalid argument"), "VFIO_SET_IOMMU")
    assert isinstance(other, errors.VfioError) and other.errno == errno.EINVAL


# -- reclaim -----------------------------------------------------------------------

OURS_DEAD = "57447276-0001-4000-8000-00000000fffe"
OURS_DEAD_BUSY = "57447276-0002-4000-8000-00000000fffd"
OURS_ALIVE = f"57447276-0003-4000-8000-{os.getpid():012x}"
FOREIGN = "11111111-2222-4333-8444-555555555555"


def reclaim_tree(tmp_path: Path) -> Path:
    t = FakeType("sha256", "sha256", 0, 10,
                 devices=[(OURS_DEAD, 1), (OURS_DEAD_BUSY, 2), (OURS_ALIVE, 3), (FOREIGN, 4)])
    return build(tmp_path, [FakeDevice("wd_dummy.0", 0, 10, types=[t])],
                 distances=DIST, cpus={0: "0", 1: "1"})


def test_uuid_namespace() -> None:
    name = selection.new_uuid(pid=4242)
    assert sysfs.is_ours(name) and sysfs.creator_pid(name) == 4242
    import uuid
    assert str(uuid.UUID(name)) == name
    assert not sysfs.is_ours(FOREIGN)
    assert selection.new_uuid() != selection.new_uuid()


def test_reclaim_picks_only_ours_dead_and_unopened(tmp_path: Path) -> None:
    root = reclaim_tree(tmp_path)
    dead = {0xfffe, 0xfffd}
    asked: list[int] = []

    def busy(group: int) -> bool:
        asked.append(group)
        return group == 2

    removed = selection.reclaim(root, alive=lambda pid: pid not in dead, busy=busy)
    assert removed == [OURS_DEAD]
    assert sorted(asked) == [1, 2]  # the live owner's and the foreign queue: never asked
    assert (root / "bus/mdev/devices" / OURS_DEAD_BUSY / "remove").read_text() == ""


def test_reclaim_with_the_real_checks(tmp_path: Path) -> None:
    root = reclaim_tree(tmp_path)
    # pid 0xfffe/0xfffd are not running here (pid_max is far above, but the
    # creator of OURS_ALIVE, this process, is); no /dev/vfio group is held
    removed = selection.reclaim(root)
    assert OURS_ALIVE not in removed and FOREIGN not in removed


def test_create_reclaims_first(tmp_path: Path) -> None:
    root = reclaim_tree(tmp_path)
    selection.create_queue_mdev(Capa("sha256"), root, node=0)
    assert (root / "bus/mdev/devices" / OURS_ALIVE / "remove").read_text() == ""
    dead_removed = (root / "bus/mdev/devices" / OURS_DEAD / "remove").read_text() == "1"
    assert dead_removed == (not selection.pid_alive(0xfffe))


def test_reclaim_removes_through_sysfs(tmp_path: Path) -> None:
    root = reclaim_tree(tmp_path)
    removed = selection.reclaim(root, alive=lambda pid: pid < 0xfff0, busy=lambda group: False)
    assert sorted(removed) == sorted([OURS_DEAD, OURS_DEAD_BUSY])
    for name in removed:
        assert (root / "bus/mdev/devices" / name / "remove").read_text() == "1"
    assert (root / "bus/mdev/devices" / FOREIGN / "remove").read_text() == ""


def test_pid_alive() -> None:
    assert selection.pid_alive(os.getpid())
    assert not selection.pid_alive(0x7FFFFFF0)


# -- provisioned queues (an administrator's mdevs) ---------------------------------------

PROV_A = "aaaaaaaa-0000-4000-8000-00000000000a"  # on the preferred device
PROV_B = "bbbbbbbb-0000-4000-8000-00000000000b"
PROV_C = "cccccccc-0000-4000-8000-00000000000c"  # on the other device


def provisioned_tree(tmp_path: Path) -> Path:
    t0 = [FakeType("sha256", "sha256", 0, 10,
                   devices=[(OURS_ALIVE, 1), (PROV_A, 2), (PROV_B, 3)]),
          FakeType("crc32c", "crc32c", 0, 10)]
    t1 = [FakeType("sha256", "sha256", 0, 10, devices=[(PROV_C, 4)])]
    return build(tmp_path, [FakeDevice("wd_dummy.0", 0, 10, types=t0),
                            FakeDevice("wd_dummy.1", 1, 20, types=t1)],
                 distances=DIST, cpus={0: "0", 1: "1"})


def test_lookup_describes_an_existing_queue(tmp_path: Path) -> None:
    root = provisioned_tree(tmp_path)
    c = selection.lookup(PROV_C, Capa("sha256"), root)
    assert (c.parent, c.mdev_type, c.algo_type, c.priority) == (
        "wd_dummy.1", "wd_dummy-sha256", "sha256", 20)
    assert selection.lookup(PROV_A, None, root).parent == "wd_dummy.0"


def test_lookup_errors_say_what_is_wrong(tmp_path: Path) -> None:
    root = provisioned_tree(tmp_path)
    with pytest.raises(errors.BadRequestError, match="is a 'sha256' queue, not 'crc32c'"):
        selection.lookup(PROV_A, Capa("crc32c"), root)
    with pytest.raises(errors.NoDeviceError, match="no mdev dddddddd"):
        selection.lookup("dddddddd-0000-4000-8000-00000000000d", Capa("sha256"), root)
    with pytest.raises(errors.BadRequestError, match="not a UUID"):
        selection.lookup("../../etc", Capa("sha256"), root)


def test_provisioned_queue_first_free_one_we_may_open(tmp_path: Path) -> None:
    root = provisioned_tree(tmp_path)
    answers = {2: -errno.EBUSY, 3: -errno.EACCES, 4: 99}
    asked: list[int] = []

    def open_group(group: int) -> int:
        asked.append(group)
        return answers[group]

    found = selection.find_provisioned(Capa("sha256"), root, node=0, open_group=open_group)
    assert found is not None
    cand, uuid, fd = found
    assert (cand.parent, uuid, fd) == ("wd_dummy.1", PROV_C, 99)
    assert asked == [2, 3, 4]  # best device first; our own namespace (group 1) never tried
    answers[3] = 77
    found = selection.find_provisioned(Capa("sha256"), root, node=0, open_group=open_group)
    assert found is not None and found[1:] == (PROV_B, 77)


def test_no_provisioned_queue_is_none(tmp_path: Path) -> None:
    root = provisioned_tree(tmp_path)
    assert selection.find_provisioned(Capa("crc32c"), root, node=0,
                                      open_group=lambda g: 5) is None
    assert selection.find_provisioned(Capa("sha256"), root, node=0,
                                      open_group=lambda g: -errno.EACCES) is None
