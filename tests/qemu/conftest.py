"""Host side of the VM suite: boots ONE guest per kernel per pytest session, runs the
in-guest pytest files (tests/qemu/guest/test_*.py) there against the real modules, and
hands each file's results to the tests in test_guest.py.

Options (also settable by environment):
  --kernel K          6.1, 6.12 or a kernel source tree; repeatable ($WD_KERNELS="6.1,6.12")
  --guest-tests PATH  folder (or file) of in-guest tests ($WD_GUEST_TESTS; default tests/qemu/guest)
  --vm-timeout S      limit for one guest's whole run ($WD_VM_TIMEOUT; default 1500)
  --guest-test-timeout S   limit for one in-guest test (default 300)

The guest: 2 vCPUs in 2 NUMA nodes, 2 GiB; KVM when the probe says it works, else TCG;
vfio, vfio_iommu_type1, mdev, wrapdrive.ko and wd_dummy.ko loaded (freshly built from
kernel/ into .cache/build/<kernel>); debugfs mounted; WD_MODULE_DIR and WD_KERNEL set;
the in-guest tests run as root with cwd = repo root and the project's venv on PATH.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import build  # noqa: E402
import vm  # noqa: E402

DEFAULT_GUEST_TESTS = REPO / "tests" / "qemu" / "guest"

# The in-guest files are run inside the guest by tools/guest_runner.py, never on the host.
collect_ignore = ["guest"]


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("wrapdrive VM suite")
    g.addoption("--kernel", action="append", default=None, help="6.1, 6.12 or PATH; repeatable")
    g.addoption("--guest-tests", default=None, help="folder or file of in-guest pytest files")
    g.addoption("--vm-timeout", type=float, default=None, help="seconds for one guest's whole run")
    g.addoption("--guest-test-timeout", type=float, default=300.0, help="seconds for one in-guest test")


def selected_kernels(config: pytest.Config) -> list[str]:
    opt = config.getoption("--kernel")
    if opt:
        return [k for item in opt for k in item.split(",") if k]
    env = os.environ.get("WD_KERNELS", "6.1,6.12")
    return [k for k in env.split(",") if k]


def guest_test_files(config: pytest.Config) -> list[Path]:
    raw = config.getoption("--guest-tests") or os.environ.get("WD_GUEST_TESTS")
    root = Path(raw).resolve() if raw else DEFAULT_GUEST_TESTS
    if root.is_file():
        return [root]
    return sorted(root.glob("test_*.py")) if root.is_dir() else []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "wd_kernel" in metafunc.fixturenames:
        ks = selected_kernels(metafunc.config)
        metafunc.parametrize("wd_kernel", ks, ids=[Path(k).name for k in ks], indirect=True, scope="session")
    if "guest_file" in metafunc.fixturenames:
        files = guest_test_files(metafunc.config)
        metafunc.parametrize("guest_file", files, ids=[f.name for f in files])


@dataclass
class GuestRun:
    """One booted guest's results, read from the folder it shared with the host."""

    kernel: str
    outdir: Path
    console: str
    elapsed: float
    timed_out: bool
    vng_rc: int
    files: list[Path]
    preamble: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    pytest_info: dict[str, Any] = field(default_factory=dict)
    pytest_output: str = ""
    boot_seconds: float = 0.0

    def console_tail(self, n: int = 60) -> str:
        return "\n".join(self.console.splitlines()[-n:])

    def output_tail(self, n: int = 6000) -> str:
        return self.pytest_output[-n:]

    def results_for(self, f: Path) -> list[dict[str, Any]]:
        return [r for r in self.records if r["event"] == "result" and Path(r["path"]) == f.resolve()]

    def unfinished_in(self, f: Path) -> list[str]:
        """Tests of f that started and never reported: the guest or pytest died there."""
        done = {r["nodeid"] for r in self.results_for(f)}
        return [
            r["nodeid"]
            for r in self.records
            if r["event"] == "start" and Path(r["path"]) == f.resolve() and r["nodeid"] not in done
        ]

    @property
    def session(self) -> dict[str, Any] | None:
        """The final in-guest pytest process's session record (None: it was cut short)."""
        if self.records and self.records[-1]["event"] == "session":
            return self.records[-1]
        return None

    def outside_kmsg(self) -> list[str]:
        return [ln for r in self.records if r["event"] == "session" for ln in r["kmsg"]]

    def ended_why(self) -> str:
        if self.timed_out:
            return "the guest timed out (killed)"
        if self.pytest_info.get("timed_out"):
            return "the in-guest pytest run timed out"
        if not self.pytest_info:
            return f"the guest ended before pytest finished (vng exit {self.vng_rc})"
        return f"the in-guest pytest ended abnormally (exit {self.pytest_info.get('returncode')})"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line cut by a guest that died mid-write
    return out


def boot_and_run(kernel_spec: str, files: list[Path], config: pytest.Config) -> GuestRun:
    target = build.resolve_target(kernel_spec)
    if target.image is None:
        pytest.fail(f"{kernel_spec}: no bootable image (build the kernel tree first)", pytrace=False)
    build.build(target)  # always test what kernel/ holds now (incremental: ~3 s)
    vm.VM_CACHE.mkdir(parents=True, exist_ok=True)
    outdir = vm.VM_CACHE / f"pytest-{target.name}-{os.getpid()}"
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    per_test = float(config.getoption("--guest-test-timeout"))
    total = config.getoption("--vm-timeout") or float(os.environ.get("WD_VM_TIMEOUT", 0) or 0) or 1500.0
    runner = [sys.executable, str(REPO / "tools" / "guest_runner.py"), "--out", str(outdir)]
    runner += ["--test-timeout", str(per_test), "--timeout", str(max(60.0, total - 120.0))]
    runner += [str(f) for f in files]
    script = outdir / "guest.sh"
    script.write_text(vm.guest_setup_script(target.build_dir, target.name) + "exec " + shlex.join(runner) + "\n")
    kvm = vm.use_kvm(target.image)
    cmd = vm.vng_command(
        target.image, exec_cmd=f"bash {shlex.quote(str(script))}", kvm=kvm, rwdirs=[vm.VM_CACHE], vng=vm.find_vng()
    )
    print(
        f"\n[wd] booting {target.name} ({'KVM' if kvm else 'TCG'}) for {len(files)} guest file(s), limit {total:.0f}s"
    )
    res = vm.run_vng(cmd, total)
    (outdir / "console.log").write_text(res.output)
    run = GuestRun(target.name, outdir, res.output, res.elapsed, res.timed_out, res.returncode, files)
    pre = outdir / "preamble.json"
    if not pre.exists():
        why = f"timed out after {total:.0f}s" if res.timed_out else f"vng exited {res.returncode}"
        pytest.fail(
            f"[{target.name}] guest setup failed ({why}): modules not loaded or no shell\n"
            f"--- console tail ---\n{run.console_tail()}",
            pytrace=False,
        )
    run.preamble = json.loads(pre.read_text())
    run.records = _read_jsonl(outdir / "report.jsonl")
    if (outdir / "pytest.json").exists():
        run.pytest_info = json.loads((outdir / "pytest.json").read_text())
    if (outdir / "pytest.out").exists():
        run.pytest_output = (outdir / "pytest.out").read_text(errors="replace")
    hang = outdir / "hang-traceback.txt"
    if hang.exists() and "Thread" in hang.read_text(errors="replace"):
        run.pytest_output += "\n--- stacks of the hung test ---\n" + hang.read_text(errors="replace")
    for ln in run.preamble.get("dmesg", []):
        if "virtme-ng-init: starting script" in ln:
            try:
                run.boot_seconds = float(ln.split("]")[0].strip("[ "))
            except ValueError:
                pass
    print(
        f"[wd] {target.name}: guest ran {res.elapsed:.1f}s wall; script started at {run.boot_seconds:.1f}s"
        f" guest uptime; in-guest pytest {run.pytest_info.get('duration', '?')}s"
    )
    return run


@pytest.fixture(scope="session")
def wd_kernel(request: pytest.FixtureRequest) -> str:
    return str(request.param)


_RUNS: dict[str, GuestRun] = {}


@pytest.fixture(scope="session")
def guest_run(wd_kernel: str, request: pytest.FixtureRequest) -> GuestRun:
    """The single guest of this kernel for this session (booted on first use)."""
    if wd_kernel not in _RUNS:
        t0 = time.monotonic()
        _RUNS[wd_kernel] = boot_and_run(wd_kernel, guest_test_files(request.config), request.config)
        _RUNS[wd_kernel].elapsed = time.monotonic() - t0
    return _RUNS[wd_kernel]
