"""VFIO plumbing: container, group and device fds, regions, irq eventfd, DMA maps.

Only what a WrapDrive queue needs.  Every failing call raises the specific
exception of ``errors.os_error`` naming what was attempted.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
from dataclasses import dataclass

from . import uapi
from .errors import VfioError, os_error

VFIO_DEV = "/dev/vfio"

_libc = ctypes.CDLL(None, use_errno=True)  # libc is already in the process
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_char_p]
_libc.ioctl.restype = ctypes.c_int


def _ioctl_struct(fd: int, request: int, obj: ctypes.Structure, what: str) -> None:
    """ioctl with an in/out struct, filled in place."""
    try:
        fcntl.ioctl(fd, request, obj, True)
    except OSError as exc:
        raise os_error(exc, what) from exc


def _ioctl_int(fd: int, request: int, arg: int, what: str) -> int:
    try:
        return fcntl.ioctl(fd, request, arg)
    except OSError as exc:
        raise os_error(exc, what) from exc


@dataclass(frozen=True)
class RegionInfo:
    index: int
    flags: int
    size: int
    offset: int


class Container:
    """/dev/vfio/vfio: one IOMMU context (type1v2) for one queue's group."""

    def __init__(self) -> None:
        path = os.path.join(VFIO_DEV, "vfio")
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise os_error(exc, f"open {path}") from exc
        try:
            version = _ioctl_int(self.fd, uapi.VFIO_GET_API_VERSION, 0, "VFIO_GET_API_VERSION")
            if version != uapi.VFIO_API_VERSION:
                raise VfioError(0, f"unknown VFIO API version {version}")
            if not _ioctl_int(self.fd, uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_TYPE1v2_IOMMU,
                              "VFIO_CHECK_EXTENSION"):
                raise VfioError(0, "VFIO type1v2 IOMMU not supported "
                                "(modprobe vfio_iommu_type1)")
        except BaseException:
            os.close(self.fd)
            raise

    def set_iommu(self) -> None:
        _ioctl_int(self.fd, uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU, "VFIO_SET_IOMMU")

    def map_dma(self, vaddr: int, iova: int, size: int) -> None:
        arg = uapi.VfioIommuType1DmaMap(
            argsz=ctypes.sizeof(uapi.VfioIommuType1DmaMap),
            flags=uapi.VFIO_DMA_MAP_FLAG_READ | uapi.VFIO_DMA_MAP_FLAG_WRITE,
            vaddr=vaddr, iova=iova, size=size)
        _ioctl_struct(self.fd, uapi.VFIO_IOMMU_MAP_DMA, arg,
                      f"VFIO_IOMMU_MAP_DMA vaddr={vaddr:#x} iova={iova:#x} size={size:#x}")

    def unmap_dma(self, iova: int, size: int) -> int:
        arg = uapi.VfioIommuType1DmaUnmap(
            argsz=ctypes.sizeof(uapi.VfioIommuType1DmaUnmap), flags=0, iova=iova, size=size)
        _ioctl_struct(self.fd, uapi.VFIO_IOMMU_UNMAP_DMA, arg,
                      f"VFIO_IOMMU_UNMAP_DMA iova={iova:#x} size={size:#x}")
        return int(arg.size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_group(group: int) -> int:
    """Open /dev/vfio/<group>; EBUSY means another process has it open."""
    path = os.path.join(VFIO_DEV, str(group))
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise os_error(exc, f"open {path}") from exc


def group_busy(group: int) -> bool:
    """True when some process holds /dev/vfio/<group> open (a VFIO group
    opens only once at a time, so our own open fails with EBUSY)."""
    path = os.path.join(VFIO_DEV, str(group))
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == 16:  # EBUSY
            return True
        if exc.errno == 2:  # ENOENT: no group node, nobody can hold it
            return False
        raise os_error(exc, f"open {path}") from exc
    os.close(fd)
    return False


class Group:
    """An opened VFIO group attached to a container."""

    def __init__(self, group: int, container: Container) -> None:
        self.number = group
        self.fd = open_group(group)
        try:
            status = uapi.VfioGroupStatus(argsz=ctypes.sizeof(uapi.VfioGroupStatus))
            _ioctl_struct(self.fd, uapi.VFIO_GROUP_GET_STATUS, status, "VFIO_GROUP_GET_STATUS")
            if not status.flags & uapi.VFIO_GROUP_FLAGS_VIABLE:
                raise VfioError(0, f"VFIO group {group} is not viable")
            cfd = ctypes.c_int(container.fd)
            _ioctl_struct(self.fd, uapi.VFIO_GROUP_SET_CONTAINER, cfd,  # type: ignore[arg-type]
                          "VFIO_GROUP_SET_CONTAINER")
        except BaseException:
            os.close(self.fd)
            raise

    def get_device_fd(self, name: str) -> int:
        """VFIO_GROUP_GET_DEVICE_FD returns the new fd as the ioctl's value,
        which fcntl.ioctl with a buffer argument hides: go through libc."""
        ret = _libc.ioctl(self.fd, uapi.VFIO_GROUP_GET_DEVICE_FD, name.encode())
        if ret < 0:
            err = ctypes.get_errno()
            raise os_error(OSError(err, os.strerror(err)), f"VFIO_GROUP_GET_DEVICE_FD {name}")
        return int(ret)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Device:
    """A VFIO device fd: regions, mmap, irq."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name

    def info(self) -> uapi.VfioDeviceInfo:
        info = uapi.VfioDeviceInfo(argsz=ctypes.sizeof(uapi.VfioDeviceInfo))
        _ioctl_struct(self.fd, uapi.VFIO_DEVICE_GET_INFO, info, "VFIO_DEVICE_GET_INFO")
        return info

    def region_info(self, index: int) -> RegionInfo:
        info = uapi.VfioRegionInfo(argsz=ctypes.sizeof(uapi.VfioRegionInfo), index=index)
        _ioctl_struct(self.fd, uapi.VFIO_DEVICE_GET_REGION_INFO, info,
                      f"VFIO_DEVICE_GET_REGION_INFO {index}")
        return RegionInfo(index=index, flags=int(info.flags), size=int(info.size),
                          offset=int(info.offset))

    def mmap_region(self, region: RegionInfo, size: int | None = None,
                    writable: bool = True) -> mmap.mmap:
        length = region.size if size is None else size
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        try:
            return mmap.mmap(self.fd, length, mmap.MAP_SHARED, prot, offset=region.offset)
        except OSError as exc:
            raise os_error(exc, f"mmap of region {region.index} of {self.name}") from exc

    def irq_info(self, index: int) -> uapi.VfioIrqInfo:
        info = uapi.VfioIrqInfo(argsz=ctypes.sizeof(uapi.VfioIrqInfo), index=index)
        _ioctl_struct(self.fd, uapi.VFIO_DEVICE_GET_IRQ_INFO, info,
                      f"VFIO_DEVICE_GET_IRQ_INFO {index}")
        return info

    def set_irq_eventfd(self, index: int, efd: int) -> None:
        """Route irq ``index`` to eventfd ``efd`` (-1 tears it down)."""
        arg = uapi.VfioIrqSetEventfd(
            argsz=ctypes.sizeof(uapi.VfioIrqSetEventfd),
            flags=uapi.VFIO_IRQ_SET_DATA_EVENTFD | uapi.VFIO_IRQ_SET_ACTION_TRIGGER,
            index=index, start=0, count=1, fd=efd)
        _ioctl_struct(self.fd, uapi.VFIO_DEVICE_SET_IRQS, arg, "VFIO_DEVICE_SET_IRQS eventfd")

    def disable_irq(self, index: int) -> None:
        arg = uapi.VfioIrqSet(
            argsz=ctypes.sizeof(uapi.VfioIrqSet),
            flags=uapi.VFIO_IRQ_SET_DATA_NONE | uapi.VFIO_IRQ_SET_ACTION_TRIGGER,
            index=index, start=0, count=0)
        _ioctl_struct(self.fd, uapi.VFIO_DEVICE_SET_IRQS, arg, "VFIO_DEVICE_SET_IRQS off")

    def mask_irq(self, index: int, masked: bool) -> None:
        action = uapi.VFIO_IRQ_SET_ACTION_MASK if masked else uapi.VFIO_IRQ_SET_ACTION_UNMASK
        arg = uapi.VfioIrqSet(argsz=ctypes.sizeof(uapi.VfioIrqSet),
                              flags=uapi.VFIO_IRQ_SET_DATA_NONE | action,
                              index=index, start=0, count=1)
        _ioctl_struct(self.fd, uapi.VFIO_DEVICE_SET_IRQS, arg, "VFIO_DEVICE_SET_IRQS mask")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
