"""Discovery: WrapDrive devices and their mdev types, read from sysfs.

Everything takes a ``root`` (default ``/sys``) so tests can point it at a
fake tree.  Reads are tolerant: a type without a ``capabilities`` group is
not a WrapDrive type and is skipped; a device whose attributes cannot be
parsed keeps ``None`` there (and selection then never picks it).
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import os_error

SYSFS = Path("/sys")
MDEV_BUS = "class/mdev_bus"
MDEV_DEVICES = "bus/mdev/devices"

#: mdevs this library creates carry this first UUID field ("WDrv" in ASCII);
#: the last field holds the creating process's pid, so a queue left behind
#: by a dead process can be told from a live one's.
UUID_PREFIX = "57447276"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path, base: int = 10) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text, 0 if base == 0 else base)
    except ValueError:
        return None


@dataclass(frozen=True)
class MdevType:
    """One mdev type of a parent device: a capability it offers."""

    parent: str
    name: str  # directory name, e.g. "wd_dummy-sha256"
    path: Path
    algo_type: str
    flags: int
    available_instances: int
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Device:
    """A parent device registered with WrapDrive (an mdev_bus member)."""

    name: str
    path: Path
    numa_zone: int | None
    priority: int | None
    types: tuple[MdevType, ...] = field(default_factory=tuple)

    @property
    def selectable(self) -> bool:
        return self.priority is not None and 1 <= self.priority <= 100


def read_type(parent: str, path: Path) -> MdevType | None:
    algo = _read(path / "capabilities" / "algo_type")
    if algo is None:
        return None
    flags = _read_int(path / "capabilities" / "flags", 0)
    avail = _read_int(path / "available_instances")
    try:
        devices = tuple(sorted(os.listdir(path / "devices")))
    except OSError:
        devices = ()
    return MdevType(parent=parent, name=path.name, path=path, algo_type=algo,
                    flags=flags if flags is not None else 0,
                    available_instances=avail if avail is not None else 0,
                    devices=devices)


def read_device(path: Path) -> Device:
    types: list[MdevType] = []
    tdir = path / "mdev_supported_types"
    try:
        names = sorted(os.listdir(tdir))
    except OSError:
        names = []
    for name in names:
        t = read_type(path.name, tdir / name)
        if t is not None:
            types.append(t)
    return Device(name=path.name, path=path, numa_zone=_read_int(path / "numa_zone"),
                  priority=_read_int(path / "priority"), types=tuple(types))


def scan(root: Path = SYSFS) -> list[Device]:
    """All mdev parents that offer at least one WrapDrive type."""
    bus = root / MDEV_BUS
    try:
        names = sorted(os.listdir(bus))
    except OSError:
        return []
    devices = [read_device(bus / name) for name in names]
    return [d for d in devices if d.types]


# -- NUMA ---------------------------------------------------------------------

def _parse_cpulist(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(part))
    return cpus


def _node_attr(name: str, root: Path) -> dict[int, str | None]:
    """node -> the text of /sys/devices/system/node/node<N>/<name>, for every node."""
    out: dict[int, str | None] = {}
    base = root / "devices/system/node"
    try:
        names = os.listdir(base)
    except OSError:
        return out
    for entry in names:
        if entry.startswith("node") and entry[4:].isdigit():
            out[int(entry[4:])] = _read(base / entry / name)
    return out


def node_cpus(root: Path = SYSFS) -> dict[int, set[int]]:
    """node -> CPUs, from /sys/devices/system/node/node*/cpulist."""
    return {node: _parse_cpulist(text) if text else set()
            for node, text in _node_attr("cpulist", root).items()}


def node_distances(root: Path = SYSFS) -> dict[int, list[int]]:
    """node -> its row of /sys/devices/system/node/node<N>/distance."""
    out: dict[int, list[int]] = {}
    for node, text in _node_attr("distance", root).items():
        if not text:
            continue
        with contextlib.suppress(ValueError):
            out[node] = [int(x) for x in text.split()]
    return out


def cpu_node(cpus: set[int], current_cpu: int | None, root: Path = SYSFS) -> int | None:
    """The NUMA node of the caller: the one node holding all CPUs it may run
    on, else the node of the CPU it runs on now; None without NUMA info."""
    nodes = node_cpus(root)
    if not nodes:
        return None
    for node, ncpus in nodes.items():
        if cpus and cpus <= ncpus:
            return node
    if current_cpu is not None:
        for node, ncpus in nodes.items():
            if current_cpu in ncpus:
                return node
    return None


# -- mdev create / remove ---------------------------------------------------------

def is_ours(name: str) -> bool:
    return name.lower().startswith(UUID_PREFIX + "-") and len(name) == 36


def creator_pid(name: str) -> int:
    return int(name[24:], 16)


def remove_mdev(name: str, root: Path = SYSFS) -> None:
    path = root / MDEV_DEVICES / name / "remove"
    try:
        with open(path, "w") as f:
            f.write("1")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise os_error(exc, f"remove mdev {name}") from exc


def mdev_iommu_group(name: str, root: Path = SYSFS) -> int:
    link = root / MDEV_DEVICES / name / "iommu_group"
    try:
        return int(os.path.basename(os.readlink(link)))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise os_error(exc, f"mdev {name} has no iommu_group "
                           "(is vfio_iommu_type1 loaded?)") from exc
        raise os_error(exc, f"read {link}") from exc
