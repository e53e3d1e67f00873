"""Host side of the VM suite: boots ONE guest per kernel per pytest session (vm.boot()),
runs the in-guest pytest files (tests/qemu/guest/test_*.py) there against the real
modules, and hands the boot's output folder to the tests in test_guest.py, which judge it
with tools/verdict.py.

Options (also settable by environment):
  --kernel K          6.1, 6.12 or a kernel source tree; repeatable ($WD_KERNELS="6.1,6.12")
  --machine M         machine profiles to boot (tools/machine.py); repeatable ($WD_MACHINES;
                      default all: `default` runs the suite, each other profile boots once
                      more per kernel for the in-guest files it names, test_edu_*.py)
  --guest-tests PATH  in-guest test files: a folder (its test_*.py), a file, or a glob such as
                      tests/qemu/guest/test_kernel_*.py; repeatable ($WD_GUEST_TESTS, comma-separated;
                      default tests/qemu/guest)
  --vm-timeout S      limit for one guest's whole run ($WD_VM_TIMEOUT; default 2700)
  --guest-test-timeout S   limit for one in-guest test unless marked slow (default 60)
  --guest-timeout-scale X  multiplies every in-guest limit, for a slow (debug) kernel
                      ($WD_TIMEOUT_SCALE; default 1)
  -k EXPR             is forwarded to the in-guest pytest (and does not filter the host's
                      tests, which are one per kernel and file)
  --durations N       also prints the N slowest in-guest tests

A boot is named KERNEL (the default machine) or KERNEL@MACHINE (e.g. 6.1@edu-iommu).
The guest: 2 vCPUs in 2 NUMA nodes, 2 GiB, the machine profile's devices; KVM when the probe says it works, else TCG;
vfio, vfio_iommu_type1, mdev, wrapdrive.ko and wd_dummy.ko loaded (freshly built from
kernel/ into .cache/build/<kernel>); debugfs mounted; WD_MODULE_DIR and WD_KERNEL set;
the in-guest tests run as root with cwd = repo root and the project's venv on PATH.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import build  # noqa: E402
import guest_runner  # noqa: E402
import machine  # noqa: E402
import verdict  # noqa: E402
import vm  # noqa: E402

DEFAULT_GUEST_TESTS = REPO / "tests" / "qemu" / "guest"
DEFAULT_VM_TIMEOUT = 2700.0

# The in-guest files are run inside the guest by tools/guest_runner.py, never on the host.
collect_ignore = ["guest"]

_GUEST_KEYWORD = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("wrapdrive VM suite")
    g.addoption("--kernel", action="append", default=None, help="6.1, 6.12 or PATH; repeatable")
    g.addoption("--machine", action="append", default=None, help="machine profile(s) to boot; repeatable")
    g.addoption("--guest-tests", action="append", default=None,
                help="in-guest pytest files: a folder, a file or a glob; repeatable")
    g.addoption("--vm-timeout", type=float, default=None, help="seconds for one guest's whole run")
    g.addoption(
        "--guest-test-timeout",
        type=float,
        default=guest_runner.DEFAULT_TEST_TIMEOUT,
        help="seconds for one in-guest test unless it is marked slow",
    )
    g.addoption("--guest-timeout-scale", type=float, default=None, help="multiplies every in-guest limit")


def pytest_configure(config: pytest.Config) -> None:
    # -k selects in-guest tests: hand it to the guest and keep it from deselecting the
    # host's per-file tests (their ids are kernel and file names, not test names).
    config.stash[_GUEST_KEYWORD] = config.option.keyword or ""
    config.option.keyword = ""


def guest_keyword(config: pytest.Config) -> str:
    return config.stash.get(_GUEST_KEYWORD, "")


def selected_kernels(config: pytest.Config) -> list[str]:
    opt = config.getoption("--kernel")
    if opt:
        return [k for item in opt for k in item.split(",") if k]
    env = os.environ.get("WD_KERNELS", "6.1,6.12")
    return [k for k in env.split(",") if k]


def selected_machines(config: pytest.Config) -> list[machine.Machine]:
    opt = config.getoption("--machine")
    names = [m for item in opt for m in item.split(",") if m] if opt else \
        [m for m in os.environ.get("WD_MACHINES", ",".join(machine.MACHINES)).split(",") if m]
    return [machine.get(n) for n in names]


def boot_name(kernel: str, m: machine.Machine) -> str:
    """KERNEL for the default machine, KERNEL@MACHINE for the others."""
    return kernel if m == machine.DEFAULT else f"{kernel}@{m.name}"


def split_boot_name(name: str) -> tuple[str, machine.Machine]:
    kernel, _, m = name.rpartition("@") if "@" in name else (name, "", machine.DEFAULT.name)
    return kernel, machine.get(m)


def machine_files(config: pytest.Config, m: machine.Machine) -> list[Path]:
    """The in-guest files a boot of machine m runs."""
    return [f for f in guest_test_files(config) if machine.runs_file(m, f.name)]


def boots(config: pytest.Config) -> list[str]:
    """Every boot of this session: a kernel on a machine that has files to run."""
    return [boot_name(k, m) for k in selected_kernels(config) for m in selected_machines(config)
            if machine_files(config, m)]  # fmt: skip


def guest_test_files(config: pytest.Config) -> list[Path]:
    raws = config.getoption("--guest-tests") or [p for p in os.environ.get("WD_GUEST_TESTS", "").split(",") if p]
    files: set[Path] = set()
    for raw in raws or [str(DEFAULT_GUEST_TESTS)]:
        path = Path(raw).resolve()
        if path.is_file():
            files.add(path)
        elif path.is_dir():
            files.update(path.glob("test_*.py"))
        else:  # a glob: its last component, in the folder before it
            files.update(p for p in path.parent.glob(path.name) if p.is_file())
    return sorted(files)


def _boot_id(name: str) -> str:
    kernel, m = split_boot_name(name)
    return boot_name(Path(kernel).name, m)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    config = metafunc.config
    if "wd_kernel" in metafunc.fixturenames and "guest_file" in metafunc.fixturenames:
        # Each boot with the files its machine runs.
        pairs = [(b, f) for b in boots(config) for f in machine_files(config, split_boot_name(b)[1])]
        metafunc.parametrize(["wd_kernel", "guest_file"], pairs, ids=[f"{_boot_id(b)}-{f.name}" for b, f in pairs],
                             indirect=["wd_kernel"])  # fmt: skip
    elif "wd_kernel" in metafunc.fixturenames:
        bs = boots(config)
        metafunc.parametrize("wd_kernel", bs, ids=[_boot_id(b) for b in bs], indirect=True, scope="session")


@dataclass
class GuestRun:
    """One booted guest: its output folder read back, and what it was asked to run."""

    kernel: str
    machine: machine.Machine
    modules: tuple[str, ...]  # ours, in load order
    evidence: verdict.Evidence
    files: list[Path]
    rootdir: Path
    keyword: str
    elapsed: float

    def nodeid_prefix(self, f: Path) -> str:
        return f"{f.resolve().relative_to(self.rootdir)}::"

    def results_for(self, f: Path) -> list[dict[str, Any]]:
        pre = self.nodeid_prefix(f)
        return [r for r in self.evidence.results() if r["nodeid"].startswith(pre)]

    def unfinished_in(self, f: Path) -> list[str]:
        pre = self.nodeid_prefix(f)
        return [n for n in self.evidence.unfinished() if n.startswith(pre)]


def say(config: pytest.Config, msg: str) -> None:
    """A line on the terminal now, past pytest's capture: where a boot's output folder is."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        print(f"[wd] {msg}", flush=True)
        return
    with capman.global_and_fixture_disabled():
        print(f"\n[wd] {msg}", flush=True)


def boot_and_run(kernel_spec: str, files: list[Path], config: pytest.Config,
                 m: machine.Machine = machine.DEFAULT) -> GuestRun:  # fmt: skip
    target = build.resolve_target(kernel_spec)
    if target.image is None:
        pytest.fail(f"{kernel_spec}: no bootable image (build the kernel tree first)", pytrace=False)
    build.build(target)  # always test what kernel/ holds now (incremental: ~3 s)
    outdir = vm.new_outdir("pytest", target.name)
    per_test = float(config.getoption("--guest-test-timeout"))
    total = config.getoption("--vm-timeout") or float(os.environ.get("WD_VM_TIMEOUT", 0) or 0) or DEFAULT_VM_TIMEOUT
    keyword = guest_keyword(config)
    durations = int(config.getoption("durations") or 0)
    scale = config.getoption("--guest-timeout-scale") or float(os.environ.get("WD_TIMEOUT_SCALE", 0) or 1)
    runner = guest_runner.host_command(sys.executable, outdir, files, test_timeout=per_test,
                                       run_timeout=max(60.0, total - 120.0), timeout_scale=scale,
                                       keyword=keyword, durations=durations)  # fmt: skip
    guest = vm.Guest(target.name, target.image, target.build_dir, vm.use_kvm(target.image), machine=m)
    name = boot_name(target.name, m)
    say(config, f"{name}: {len(files)} guest file(s){f', -k {keyword!r}' if keyword else ''}")
    trouble = guest_runner.precompile(sys.executable, files)
    if trouble:
        say(config, f"{name}: {trouble} (the guest compiles for itself)")
    t0 = time.monotonic()
    vm.boot(guest, runner, outdir, timeout=total, watch=guest_runner.HangWatch(outdir / "report.jsonl"),
            log=lambda m: say(config, m))  # fmt: skip
    ev = verdict.Evidence.load(outdir)
    run = GuestRun(name, m, guest.modules, ev, files, guest_runner.common_root([str(f) for f in files]), keyword,
                   time.monotonic() - t0)  # fmt: skip
    up = verdict.script_start(ev)
    say(
        config,
        f"{name}: guest ran {run.elapsed:.1f}s wall; script started at {up} guest uptime;"
        f" in-guest pytest {(ev.runner or {}).get('duration', '?')}s; output in {outdir}",
    )
    return run


@pytest.fixture(scope="session")
def wd_kernel(request: pytest.FixtureRequest) -> str:
    return str(request.param)


_RUNS: dict[str, GuestRun] = {}


@pytest.fixture(scope="session")
def guest_run(wd_kernel: str, request: pytest.FixtureRequest) -> GuestRun:
    """The single guest of this kernel and machine for this session (booted on first use)."""
    if wd_kernel not in _RUNS:
        kernel, m = split_boot_name(wd_kernel)
        _RUNS[wd_kernel] = boot_and_run(kernel, machine_files(request.config, m), request.config, m)
    return _RUNS[wd_kernel]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """With --durations N: the N slowest in-guest tests of each kernel."""
    n = int(config.getoption("durations") or 0)
    for kernel, run in _RUNS.items():
        results = sorted(run.evidence.results(), key=lambda r: -float(r.get("duration", 0)))
        if not n or not results:
            continue
        terminalreporter.write_sep("=", f"slowest {min(n, len(results))} in-guest tests ({kernel})")
        for r in results[:n]:
            terminalreporter.write_line(f"{float(r['duration']):8.2f}s {r['outcome']:8} {r['nodeid']}")
