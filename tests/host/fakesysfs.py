"""Build a fake sysfs tree (host tests only; not part of the wrapdrive package).

The layout is the one of a real kernel with WrapDrive drivers loaded, so
discovery, ranking, reclaim and the CLI can be tested without a VM::

    build(tmp_path, [FakeDevice("wd_dummy.0", numa_zone=0, priority=10,
                                types=[FakeType("sha256", "sha256")])],
          distances={0: [10, 20], 1: [20, 10]}, cpus={0: "0", 1: "1"})
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from wrapdrive.sysfs import MDEV_BUS, MDEV_DEVICES


@dataclass
class FakeType:
    sysfs_name: str
    algo_type: str
    flags: int = 0
    available: int = 16
    devices: list[tuple[str, int]] = field(default_factory=list)  # (uuid, iommu group)


@dataclass
class FakeDevice:
    name: str
    numa_zone: int = 0
    priority: int = 10
    driver: str = "wd_dummy"
    types: list[FakeType] = field(default_factory=list)


def build(root: Path, devices: list[FakeDevice],
          distances: dict[int, list[int]] | None = None,
          cpus: dict[int, str] | None = None) -> Path:
    bus = root / MDEV_BUS
    bus.mkdir(parents=True, exist_ok=True)
    mdevs = root / MDEV_DEVICES
    mdevs.mkdir(parents=True, exist_ok=True)
    for dev in devices:
        d = root / "devices/platform" / dev.name
        d.mkdir(parents=True, exist_ok=True)
        (d / "numa_zone").write_text(f"{dev.numa_zone}\n")
        (d / "priority").write_text(f"{dev.priority}\n")
        for t in dev.types:
            td = d / "mdev_supported_types" / f"{dev.driver}-{t.sysfs_name}"
            (td / "capabilities").mkdir(parents=True, exist_ok=True)
            (td / "devices").mkdir(exist_ok=True)
            (td / "capabilities/algo_type").write_text(t.algo_type + "\n")
            (td / "capabilities/flags").write_text(f"0x{t.flags:08x}\n")
            (td / "available_instances").write_text(f"{t.available}\n")
            (td / "create").write_text("")
            (td / "name").write_text(t.sysfs_name + "\n")
            for uuid, group in t.devices:
                md = d / uuid
                md.mkdir(exist_ok=True)
                (md / "remove").write_text("")
                gdir = root / "kernel/iommu_groups" / str(group)
                (gdir / "devices").mkdir(parents=True, exist_ok=True)
                glink = gdir / "devices" / uuid
                if not glink.is_symlink():
                    os.symlink(md, glink)
                link = md / "iommu_group"
                if not link.is_symlink():
                    os.symlink(gdir, link)
                tlink = md / "mdev_type"
                if not tlink.is_symlink():
                    os.symlink(td, tlink)
                tl = td / "devices" / uuid
                if not tl.is_symlink():
                    os.symlink(md, tl)
                bl = mdevs / uuid
                if not bl.is_symlink():
                    os.symlink(md, bl)
        link = bus / dev.name
        if not link.is_symlink():
            os.symlink(d, link)
    nodes = root / "devices/system/node"
    for node, row in (distances or {}).items():
        nd = nodes / f"node{node}"
        nd.mkdir(parents=True, exist_ok=True)
        (nd / "distance").write_text(" ".join(str(x) for x in row) + "\n")
        (nd / "cpulist").write_text((cpus or {}).get(node, "") + "\n")
    return root
