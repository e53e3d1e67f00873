#!/usr/bin/env python3
"""Re-record the guest outputs the host tests re-judge (tests/host/test_build_evidence.py).

Each scenario boots Debian's 6.1 once through vm.boot(), exactly as the VM suite or
`tools/build.py run` would, and copies the output folder here (tests/host/data/guest/
<scenario>/).  The probes (probes/probe_*.py) are in-guest tests made to fail in the
ways the evidence must survive.  Run from the repository root:

    .venv/bin/python tests/host/data/guest/record.py [SCENARIO ...]

`debug-boot` boots a debug kernel instead (KASAN, lockdep, kmemleak; vfio, type1 and mdev
built in): WD_DEBUG_KERNEL=<folder with boot/vmlinuz-* and the built tree in build/>.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
sys.path.insert(0, str(REPO / "tools"))

import build  # noqa: E402
import guest_runner  # noqa: E402
import vm  # noqa: E402

PROBES = HERE / "probes"
KEEP = ("console.log", "boot.json", "session-start.json", "session-end.json", "status", "report.jsonl",
        "runner.json", "pytest.out", "hang-traceback.txt")  # fmt: skip


def runner(out: Path, names: list[str], **kw: float) -> list[str]:
    return guest_runner.host_command(sys.executable, out, [PROBES / n for n in names], **kw)  # type: ignore[arg-type]


def commands(out: Path) -> dict[str, list[str]]:
    return {
        # the guest panics: its oops must reach the host (vng --verbose)
        "panic": ["sh", "-c", "echo c > /proc/sysrq-trigger"],
        # the command passes, the kernel logged backtraces: `build.py run` must fail
        "run-splat": ["sh", "-c", "echo l > /proc/sysrq-trigger; sleep 1; echo command done"],
        # a crashed pytest (restarted), leaks between files, a splat after the last test,
        # a queue with pinned pages left open at the end of the session
        "session": runner(out, ["probe_crash.py", "probe_leak_a.py", "probe_leak_b.py"]),
        # a test stuck in the kernel past its limit: dumped and powered off from outside
        "hang": runner(out, ["probe_hang.py"], test_timeout=15.0),
        # /dev/kmsg cannot be opened: every check must fail, not pass
        "kmsg-gone": ["sh", "-c", "rm -f /dev/kmsg && exec \"$@\"", "sh", *runner(out, ["probe_kmsg_gone.py"])],
        # a debug kernel: lockdep on at the start, built-in stock modules, kmemleak at the end
        "debug-boot": guest_runner.host_command(
            sys.executable, out, [REPO / "tests" / "qemu" / "guest" / "test_kernel_sysfs.py"],
            timeout_scale=5.0, keyword="test_parents or test_types",
        ),  # fmt: skip
    }


def target_for(name: str) -> build.Target:
    if name != "debug-boot":
        return build.resolve_target("6.1")
    root = Path(os.environ["WD_DEBUG_KERNEL"])
    (image,) = root.glob("boot/vmlinuz-*")
    return build.Target("debug-record", root / "build", image, root / "build")


def record(name: str) -> Path:
    target = target_for(name)
    build.build(target)
    assert target.image is not None
    guest = vm.Guest(target.name, target.image, target.build_dir, vm.use_kvm(target.image))
    out = vm.new_outdir("record", name)
    vm.boot(guest, commands(out)[name], out, timeout=1800, echo=print)
    dest = HERE / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    for f in sorted(out.iterdir()):
        if f.name in KEEP or f.name.startswith("kmsg-"):
            shutil.copy2(f, dest / f.name)
    print(f"recorded {name}: {out} -> {dest}")
    return dest


if __name__ == "__main__":
    default = [n for n in commands(Path("/x")) if n != "debug-boot" or os.environ.get("WD_DEBUG_KERNEL")]
    for n in sys.argv[1:] or default:
        record(n)
