"""Choosing the mdev type a queue is created from, and reclaiming leftovers.

Ranking (the seed's rules, then ours):
  1. the type's algo_type equals the request's;
  2. the type's flags cover the requested flags; a WD_WEAK_ORDER type is
     only taken when the request allows weak order (a strongly ordered type
     always satisfies a request that allows weak order);
  3. the device's priority is in 1..100 (others are never chosen), smaller
     first;
  4. smaller NUMA distance from the calling CPU's node to the device's
     numa_zone first;
  5. more free instances first;
  6. the type whose flags differ least from the request's (so a request
     allowing weak order gets the weakly ordered type, one that does not
     ask for WD_CAPA_SHARE_ALL gets the plain type), then names.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from . import sysfs
from .errors import NoDeviceError, QueueExhaustedError, os_error
from .sysfs import Device, MdevType
from .uapi import WD_CAPA_SHARE_ALL, WD_WEAK_ORDER

#: distance used when the tables say nothing about a pair of nodes.
UNKNOWN_DISTANCE = 255


@dataclass(frozen=True)
class Capa:
    """What the caller asks for: an algo_type and a mask of WD_* flag bits."""

    algo_type: str
    flags: int = 0


@dataclass(frozen=True)
class Candidate:
    device: Device
    mtype: MdevType
    distance: int



def flags_match(type_flags: int, wanted: int) -> bool:
    required = wanted & ~WD_WEAK_ORDER
    if type_flags & required != required:
        return False
    return not (type_flags & WD_WEAK_ORDER and not wanted & WD_WEAK_ORDER)


def distance(distances: dict[int, list[int]], node: int | None, zone: int | None) -> int:
    if node is None or zone is None or zone < 0:
        return 0 if node is None else UNKNOWN_DISTANCE
    row = distances.get(node)
    if row is None or zone >= len(row):
        return 10 if zone == node else UNKNOWN_DISTANCE
    return row[zone]


def rank(devices: Iterable[Device], capa: Capa, node: int | None,
         distances: dict[int, list[int]]) -> list[Candidate]:
    """Matching types, best first; unselectable devices are left out."""
    out: list[Candidate] = []
    for dev in devices:
        if not dev.selectable:
            continue
        for t in dev.types:
            if t.algo_type == capa.algo_type and flags_match(t.flags, capa.flags):
                out.append(Candidate(dev, t, distance(distances, node, dev.numa_zone)))
    out.sort(key=lambda c: (c.device.priority or 0, c.distance,
                            -c.mtype.available_instances,
                            bin(c.mtype.flags ^ capa.flags).count("1"),
                            c.device.name, c.mtype.name))
    return out


def describe(devices: Iterable[Device]) -> str:
    lines = []
    for dev in devices:
        caps = ", ".join(f"{t.algo_type}[{t.flags:#x}]" for t in dev.types)
        state = "" if dev.selectable else " (priority out of 1..100: never selected)"
        lines.append(f"  {dev.name}: numa_zone={dev.numa_zone} priority={dev.priority}"
                     f"{state}: {caps}")
    return "\n".join(lines) if lines else "  (none: is a WrapDrive driver such as wd_dummy loaded?)"


def flag_names(flags: int) -> str:
    names = []
    if flags & WD_CAPA_SHARE_ALL:
        names.append("WD_CAPA_SHARE_ALL")
    if flags & WD_WEAK_ORDER:
        names.append("WD_WEAK_ORDER")
    rest = flags & ~(WD_CAPA_SHARE_ALL | WD_WEAK_ORDER)
    if rest:
        names.append(f"{rest:#x}")
    return "|".join(names) or "0"


def no_device_error(devices: list[Device], capa: Capa) -> NoDeviceError:
    return NoDeviceError(
        f"no device offers algo_type {capa.algo_type!r} with flags "
        f"{flag_names(capa.flags)}; devices found:\n{describe(devices)}")


def calling_node(root: Path = sysfs.SYSFS) -> int | None:
    try:
        cpus = os.sched_getaffinity(0)
    except OSError:
        cpus = set()
    return sysfs.cpu_node(set(cpus), _current_cpu(), root)


def _current_cpu() -> int | None:
    try:
        import ctypes
        cpu = int(ctypes.CDLL(None).sched_getcpu())
        return cpu if cpu >= 0 else None
    except (OSError, AttributeError):
        return None


# -- leftovers of dead processes ---------------------------------------------------

def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_mdevs(devices: Iterable[Device], root: Path,
                alive: Callable[[int], bool],
                busy: Callable[[int], bool]) -> list[str]:
    """Our mdevs whose creator is dead and whose VFIO group nobody holds."""
    stale = []
    for dev in devices:
        for t in dev.types:
            for name in t.devices:
                if not sysfs.is_ours(name) or alive(sysfs.creator_pid(name)):
                    continue
                try:
                    group = sysfs.mdev_iommu_group(name, root)
                except OSError:
                    continue
                if not busy(group):
                    stale.append(name)
    return stale


def reclaim(devices: Iterable[Device], root: Path = sysfs.SYSFS,
            alive: Callable[[int], bool] = pid_alive,
            busy: Callable[[int], bool] | None = None) -> list[str]:
    """Remove the queues dead processes left behind; returns their names."""
    if busy is None:
        from .vfio import group_busy
        busy = group_busy
    removed = []
    for name in stale_mdevs(devices, root, alive, busy):
        try:
            sysfs.remove_mdev(name, root)
        except OSError:
            continue
        removed.append(name)
    return removed


#: create fails with these when a device is out of queues (the mdev core of
#: Linux 6.1 and 6.12 reports EUSERS; drivers may use ENOSPC or EDQUOT).
EXHAUSTED = (errno.ENOSPC, errno.EDQUOT, errno.EUSERS)


def create_queue_mdev(capa: Capa, root: Path = sysfs.SYSFS,
                      node: int | None = None,
                      devices: list[Device] | None = None,
                      do_reclaim: bool = True) -> tuple[Candidate, str]:
    """Create an mdev for ``capa`` on the best device that has room.

    Returns the candidate used and the new mdev's name.  Falls back to the
    next candidate when one is exhausted (available_instances 0, or create
    fails with ENOSPC/EDQUOT)."""
    if devices is None:
        devices = sysfs.scan(root)
    if do_reclaim and reclaim(devices, root):
        devices = sysfs.scan(root)
    if node is None:
        node = calling_node(root)
    ranked = rank(devices, capa, node, sysfs.node_distances(root))
    if not ranked:
        raise no_device_error(devices, capa)
    tried = []
    for cand in ranked:
        tried.append(f"{cand.device.name}/{cand.mtype.name}")
        if cand.mtype.available_instances <= 0:
            continue
        name = sysfs.new_uuid()
        try:
            sysfs.create_mdev(cand.mtype, name)
        except OSError as exc:
            if exc.errno in EXHAUSTED:
                continue
            raise os_error(exc, f"create mdev on {cand.mtype.path}") from exc
        return cand, name
    raise QueueExhaustedError(
        f"every device offering {capa.algo_type!r} is out of queues "
        f"(tried {', '.join(tried)})")
