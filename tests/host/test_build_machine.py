"""Host tests of the machine profiles (tools/machine.py) and how a boot uses them: which
in-guest files each machine's boot runs, the QEMU options and kernel arguments on vng's
command line, the modules the guest script loads (with their parameters) and unloads."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import machine  # noqa: E402
import vm  # noqa: E402


def test_edu_files_run_only_on_the_edu_machines() -> None:
    for name in ("test_edu_copy.py", "test_edu_lifecycle.py"):
        assert not machine.runs_file(machine.DEFAULT, name)
        assert machine.runs_file(machine.EDU_IOMMU, name)
        assert machine.runs_file(machine.EDU_LEGACY, name)
    for name in ("test_kernel_vfio.py", "test_userlib_api.py"):
        assert machine.runs_file(machine.DEFAULT, name)
        assert not machine.runs_file(machine.EDU_IOMMU, name)


def test_every_guest_file_has_a_machine() -> None:
    files = sorted(p.name for p in (REPO / "tests" / "qemu" / "guest").glob("test_*.py"))
    for f in files:
        assert sum(machine.runs_file(m, f) for m in machine.MACHINES.values()) >= 1, f


def test_vng_command_carries_the_machine_first() -> None:
    m = machine.EDU_IOMMU
    cmd = vm.vng_command(Path("/k"), exec_cmd="true", kvm=False, vng="vng",
                         kernel_args=(*vm.KERNEL_ARGS, *m.kernel_args), qemu_opts=m.qemu_opts)  # fmt: skip
    opts = [a for a in cmd if a.startswith("--qemu-opts=")]
    assert shlex.split(opts[0].removeprefix("--qemu-opts=")) == list(m.qemu_opts)
    joined = " ".join(shlex.split(opts[0].removeprefix("--qemu-opts=")))
    assert joined.index("intel-iommu") < joined.index("edu,")  # the IOMMU before its devices
    assert "--append=intel_iommu=on" in cmd
    plain = vm.vng_command(Path("/k"), exec_cmd="true", kvm=False, vng="vng")
    assert not any("intel-iommu" in a or "edu," in a for a in plain)


def test_guest_script_loads_and_names_the_machine_modules() -> None:
    s = vm.guest_setup_script(Path("/b/6.1"), "6.1", Path("/o"), path="/usr/bin", python="/py",
                              cached_dirs=[], machine=machine.EDU_LEGACY)  # fmt: skip
    assert "export WD_MACHINE=edu-legacy" in s
    assert "insmod /b/6.1/wd_edu.ko dma_bits=64" in s
    assert s.index("/b/6.1/wd_dummy.ko") < s.index("/b/6.1/wd_edu.ko")
    assert "--modules vfio,vfio_iommu_type1,mdev,wrapdrive,wd_dummy,wd_edu" in s
    plain = vm.guest_setup_script(Path("/b/6.1"), "6.1", Path("/o"), path="/usr/bin", python="/py", cached_dirs=[])
    assert "wd_edu" not in plain and "export WD_MACHINE=default" in plain


def test_guest_modules_and_their_unloading_order() -> None:
    g = vm.Guest("6.1", Path("/k"), Path("/b"), False, machine=machine.EDU_IOMMU)
    assert g.modules == ("wrapdrive", "wd_dummy", "wd_edu")
    assert vm.Guest("6.1", Path("/k"), None, False, machine=machine.EDU_IOMMU).modules == ()
    assert "wd_edu" in vm.BUILT_MODULES
