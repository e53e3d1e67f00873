"""Exceptions of the wrapdrive library: one class per thing that can go wrong."""

from __future__ import annotations

import errno

from .abi import STATUS_NAMES


class WrapDriveError(Exception):
    """Base class of every error this library raises on purpose."""


class NoDeviceError(WrapDriveError, LookupError):
    """No device offers the requested capability (the message lists what exists)."""


class QueueExhaustedError(NoDeviceError):
    """Devices match the capability but every one of them is out of queues."""


class DevicePermissionError(WrapDriveError, PermissionError):
    """The process may not open /dev/vfio/* or write the mdev sysfs files."""


class VfioError(WrapDriveError, OSError):
    """A VFIO ioctl or sysfs operation failed for another reason."""


class QueueReleasedError(WrapDriveError, ValueError):
    """The queue was released (wd_release_queue) and cannot be used any more."""


class QueueDeadError(WrapDriveError, OSError):
    """The device behind the queue went away (WD_Q_DEAD / ENODEV)."""

    def __init__(self, message: str = "queue is dead: its device went away") -> None:
        super().__init__(errno.ENODEV, message)


class RequestTooLargeError(WrapDriveError, ValueError):
    """A request's length is over WD_MAX_LEN."""


class NotSharedError(WrapDriveError, ValueError):
    """A request names memory that is not shared with the queue's device."""


class BadRequestError(WrapDriveError, ValueError):
    """A request is malformed (unknown opcode for this queue, bad field)."""


class QueueFullError(WrapDriveError, BlockingIOError):
    """wd_send: the ring is full (EBUSY); try again after receiving."""

    def __init__(self) -> None:
        super().__init__(errno.EBUSY, "queue full")


class QueueEmptyError(WrapDriveError, BlockingIOError):
    """wd_recv: nothing has completed yet (EAGAIN)."""

    def __init__(self) -> None:
        super().__init__(errno.EAGAIN, "no completed request")


class RequestFailedError(WrapDriveError):
    """The device completed a request with a status other than WD_STS_OK."""

    def __init__(self, status: int, what: str = "request") -> None:
        self.status = status
        name = STATUS_NAMES.get(status, f"status {status}")
        super().__init__(f"{what} failed on the device: {name}")


UDEV_HINT = (
    "to use queues without root, an administrator runs `wrapdrive setup --group wrapdrive` "
    "once (udev rules giving that group the queues' VFIO group nodes and the mdev create/"
    "remove files) and adds you to the group (`usermod -aG wrapdrive USER`, then log in "
    "again); or provisions queues for you (docs/deploy.rst)"
)


def os_error(exc: OSError, what: str) -> WrapDriveError:
    """Map an OSError from a VFIO/sysfs operation to the specific exception."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return DevicePermissionError(exc.errno, f"{what}: permission denied; {UDEV_HINT}")
    if exc.errno == errno.ENODEV:
        return QueueDeadError(f"{what}: device is gone (ENODEV)")
    return VfioError(exc.errno, f"{what}: {exc.strerror or exc}")
