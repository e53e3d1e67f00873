"""Machine profiles: the one place that says what a guest is booted with beyond a kernel.

Every boot (vm.boot) uses one profile: the extra QEMU devices, extra kernel arguments and
extra modules of ours to load (with their parameters).  The VM suite boots the default
machine for the whole suite, and each of the other profiles once more per kernel for the
in-guest files named after it (tests/qemu/guest/test_edu_*.py).

  default     the suite's machine: wd_dummy's platform devices only
  edu-iommu   QEMU's edu PCI device (1234:11e8, DMA to any address) behind an emulated
              Intel IOMMU, wd_edu.ko bound to it: the device's DMA goes through VT-d
  edu-legacy  the same device without an IOMMU: the seed's "legacy mode" (README)

Checked with Debian bookworm's qemu-system-x86 7.2 under TCG (`-device intel-iommu,
intremap=off` before `-device edu`, `intel_iommu=on`: "DMAR: IOMMU enabled", the device in
an IOMMU group of its own, DMA through it).  An IOMMU must come before the devices it
translates for on QEMU's command line.  `dma_mask` lets the device reach all of guest
memory and wd_edu's `dma_bits=64` says so to the DMA API; QEMU's default mask is 28 bits,
which the driver's default matches.

QEMU's edu takes 100 ms per DMA on QEMU's virtual clock, which follows the host's clock:
an edu boot is cheap only while its tests move few bytes (see test_edu_copy.py).
"""

from __future__ import annotations

from dataclasses import dataclass

EDU_FILES = "test_edu_*.py"


@dataclass(frozen=True)
class Machine:
    """What a guest is booted with, besides the kernel."""

    name: str
    qemu_opts: tuple[str, ...] = ()  # appended to QEMU's command line, in this order
    kernel_args: tuple[str, ...] = ()  # appended to the kernel command line
    modules: tuple[tuple[str, tuple[str, ...]], ...] = ()  # ours, after wrapdrive: (name, params)
    guest_files: str = ""  # glob of the in-guest test files this machine runs ('' = the rest)

    @property
    def module_names(self) -> tuple[str, ...]:
        return tuple(m for m, _ in self.modules)


DEFAULT = Machine("default")

_EDU = "edu,dma_mask=0xffffffffffffffff"
_WD_EDU = (("wd_edu", ("dma_bits=64",)),)

EDU_IOMMU = Machine(
    "edu-iommu",
    qemu_opts=("-device", "intel-iommu,intremap=off", "-device", _EDU),
    kernel_args=("intel_iommu=on",),
    modules=_WD_EDU,
    guest_files=EDU_FILES,
)

EDU_LEGACY = Machine(
    "edu-legacy",
    qemu_opts=("-device", _EDU),
    kernel_args=("intel_iommu=off",),
    modules=_WD_EDU,
    guest_files=EDU_FILES,
)

MACHINES: dict[str, Machine] = {m.name: m for m in (DEFAULT, EDU_IOMMU, EDU_LEGACY)}


def get(name: str) -> Machine:
    try:
        return MACHINES[name]
    except KeyError:
        raise SystemExit(f"unknown machine profile {name!r}; known: {', '.join(MACHINES)}") from None


def runs_file(machine: Machine, filename: str) -> bool:
    """Does this machine's boot run the in-guest file `filename`?  A profile with a glob
    runs the files that match it; the default machine runs every file no profile claims."""
    from fnmatch import fnmatch

    if machine.guest_files:
        return fnmatch(filename, machine.guest_files)
    return not any(m.guest_files and fnmatch(filename, m.guest_files) for m in MACHINES.values())
