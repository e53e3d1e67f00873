"""``wrapdrive setup``: the udev rules it writes and the helper they run, the
helper exercised against a fake sysfs tree and fake /dev/vfio nodes (host,
no udev; the VM suite runs the real thing in tests/qemu/guest/test_userlib_nonroot.py)."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
from pathlib import Path

import pytest
from fakesysfs import FakeDevice, FakeType, build
from wrapdrive import admin, cli

QUEUE = "11111111-2222-4333-8444-555555555555"
OTHER = "22222222-2222-4333-8444-555555555555"  # an mdev of some other driver


def other_group() -> str:
    """A group other than ours, so chgrp visibly changes something."""
    mine = os.getgid()
    for g in grp.getgrall():
        if g.gr_gid != mine:
            return g.gr_name
    pytest.skip("only one group on this host")


def test_rules_name_the_group_and_the_helper() -> None:
    text = admin.rules_text("accel")
    assert 'GROUP="accel", MODE="0660"' in text
    assert 'PROGRAM=="/usr/local/libexec/wrapdrive-udev vfio-group %k"' in text
    assert 'ENV{MDEV_STATE}=="registered"' in text and "parent /sys%p accel" in text
    assert 'SUBSYSTEM=="mdev", ACTION=="add"' in text and "mdev /sys%p accel" in text
    assert "@" not in text
    only = admin.rules_text("accel", open_only=True)
    assert "vfio-group" in only
    assert "MDEV_STATE" not in only and "mdev /sys%p" not in only
    with pytest.raises(admin.SetupError, match="bad group name"):
        admin.rules_text('x", MODE="0666')


def test_setup_destdir_installs_the_two_files(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["setup", "--group", "accel", "--destdir", str(tmp_path)]) == 0
    rules = tmp_path / "etc/udev/rules.d/70-wrapdrive.rules"
    helper = tmp_path / "usr/local/libexec/wrapdrive-udev"
    assert rules.read_text() == admin.rules_text("accel")
    assert stat.S_IMODE(helper.stat().st_mode) == 0o755
    assert stat.S_IMODE(rules.stat().st_mode) == 0o644
    assert f"wrote {rules}" in capsys.readouterr().out
    assert cli.main(["setup", "--uninstall", "--destdir", str(tmp_path)]) == 0
    assert not rules.exists() and not helper.exists()


def test_setup_as_a_user_says_root(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("runs as root")
    with pytest.raises(admin.SetupError, match="must run as root"):
        admin.install("accel")


def fake_machine(tmp_path: Path) -> tuple[Path, Path, Path]:
    sysroot = build(tmp_path / "sys", [FakeDevice("wd_dummy.0", types=[
        FakeType("sha256", "sha256", devices=[(QUEUE, 0)]), FakeType("zlib", "zlib")])])
    # another driver's mdev (no capabilities/) in group 1
    od = sysroot / "devices/platform/mtty/mdev_supported_types/mtty-1"
    (od / "devices").mkdir(parents=True)
    (od / "create").write_text("")
    md = sysroot / "devices/platform/mtty" / OTHER
    md.mkdir()
    (md / "remove").write_text("")
    os.symlink(od, md / "mdev_type")
    (sysroot / "kernel/iommu_groups/1/devices").mkdir(parents=True)
    os.symlink(md, sysroot / "kernel/iommu_groups/1/devices" / OTHER)
    os.symlink(md, sysroot / "bus/mdev/devices" / OTHER)
    os.symlink(sysroot / "devices/platform/mtty", sysroot / "class/mdev_bus/mtty")
    dev = tmp_path / "dev"
    (dev / "vfio").mkdir(parents=True)
    for n in ("0", "1", "vfio"):
        (dev / "vfio" / n).write_text("")
        (dev / "vfio" / n).chmod(0o600)
    for f in sysroot.rglob("create"):
        f.chmod(0o200)
    for f in sysroot.rglob("remove"):
        f.chmod(0o200)
    helper = tmp_path / "wrapdrive-udev"
    helper.write_text(admin.helper_text())
    helper.chmod(0o755)
    return sysroot, dev, helper


def run_helper(helper: Path, sysroot: Path, dev: Path, *args: str) -> int:
    env = dict(os.environ, WD_SYSFS=str(sysroot), WD_DEV=str(dev))
    return subprocess.run([str(helper), *args], env=env, timeout=60).returncode


def mode_group(path: Path) -> tuple[int, str]:
    st = path.stat()
    return stat.S_IMODE(st.st_mode), grp.getgrgid(st.st_gid).gr_name


def test_helper_tells_wrapdrive_queues_from_other_mdevs(tmp_path: Path) -> None:
    sysroot, dev, helper = fake_machine(tmp_path)
    assert run_helper(helper, sysroot, dev, "vfio-group", "0") == 0
    assert run_helper(helper, sysroot, dev, "vfio-group", "1") == 1  # mtty's
    assert run_helper(helper, sysroot, dev, "vfio-group", "7") == 1  # no such group
    assert run_helper(helper, sysroot, dev, "nonsense") == 2


def test_helper_grants_create_remove_and_nodes_of_ours_only(tmp_path: Path) -> None:
    sysroot, dev, helper = fake_machine(tmp_path)
    g = other_group()
    assert run_helper(helper, sysroot, dev, "all", g) == 0
    types = sysroot / "devices/platform/wd_dummy.0/mdev_supported_types"
    assert mode_group(types / "wd_dummy-sha256/create") == (0o220, g)
    assert mode_group(types / "wd_dummy-zlib/create") == (0o220, g)
    assert mode_group(sysroot / "bus/mdev/devices" / QUEUE / "remove") == (0o220, g)
    assert mode_group(dev / "vfio/0") == (0o660, g)
    # another driver's mdev, its type and its group node are left alone
    assert mode_group(dev / "vfio/1")[0] == 0o600
    assert mode_group(dev / "vfio/vfio")[0] == 0o600
    assert mode_group(sysroot / "bus/mdev/devices" / OTHER / "remove")[0] == 0o200
    mt = sysroot / "devices/platform/mtty/mdev_supported_types/mtty-1/create"
    assert mode_group(mt)[0] == 0o200


def test_helper_open_only_leaves_create_and_remove_to_root(tmp_path: Path) -> None:
    sysroot, dev, helper = fake_machine(tmp_path)
    g = other_group()
    assert run_helper(helper, sysroot, dev, "all", g) == 0  # granted before: taken back
    assert run_helper(helper, sysroot, dev, "all", g, "open") == 0
    assert mode_group(dev / "vfio/0") == (0o660, g)
    types = sysroot / "devices/platform/wd_dummy.0/mdev_supported_types"
    assert mode_group(types / "wd_dummy-sha256/create")[0] == 0o200
    assert mode_group(sysroot / "bus/mdev/devices" / QUEUE / "remove")[0] == 0o200


def test_helper_revoke_takes_everything_back(tmp_path: Path) -> None:
    sysroot, dev, helper = fake_machine(tmp_path)
    g = other_group()
    assert run_helper(helper, sysroot, dev, "all", g) == 0
    assert run_helper(helper, sysroot, dev, "revoke") == 0
    types = sysroot / "devices/platform/wd_dummy.0/mdev_supported_types"
    assert mode_group(types / "wd_dummy-sha256/create")[0] == 0o200
    assert mode_group(sysroot / "bus/mdev/devices" / QUEUE / "remove")[0] == 0o200
    assert mode_group(dev / "vfio/0")[0] == 0o600
    assert os.stat(dev / "vfio/0").st_gid == 0
