"""WrapDrive's sessions.  `nox` alone runs what CI runs: debug-kernel (a background build),
lint, unit, docs, build, vm-6.1, vm-6.12, vm-debug.

All sessions use the project's one venv (.venv, made by tools/bootstrap.sh with
tools/requirements.txt and `pip install -e userlib`) instead of a venv each: the VM
sessions need that venv anyway (the guest runs the host's Python), and CI stays fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nox
from nox.command import CommandFailed

REPO = Path(__file__).resolve().parent
VENV_PY = REPO / ".venv" / "bin" / "python"
PY = str(VENV_PY) if VENV_PY.exists() else sys.executable
BUILD = [PY, str(REPO / "tools" / "build.py")]
DURATIONS = 20  # the slowest tests of each pytest session, printed (in-guest ones too)

# debug-kernel first: it only starts the debug kernel's build in the background, for
# vm-debug at the end (see the VM coverage below).
nox.options.sessions = ["debug-kernel", "lint", "unit", "docs", "build", "vm-6.1", "vm-6.12", "vm-debug"]
nox.options.default_venv_backend = "none"
nox.options.error_on_external_run = False


# Seconds each command of a session may take, under timeout(1) (which signals the whole
# process group): generous, but CI never hangs.  A VM session's guest has its own limit
# (--vm-timeout, 2700 s) inside this one.
LIMIT = 1200
LIMIT_VM = 3600


def _run(session: nox.Session, *args: str, limit: int = LIMIT, **env: str) -> None:
    session.run("timeout", "--kill-after=30", str(limit), *args, external=True, env=env or None)


# What wrapdrive._native (libwd bound with cffi, built by `pip install -e userlib`) is made of.
USERLIB = REPO / "userlib"
NATIVE_SOURCES = (USERLIB / "build_native.py", USERLIB / "setup.py", REPO / "kernel" / "uapi" / "wrapdrive.h")
NATIVE_GLOBS = ("libwd/src/*.[ch]", "libwd/include/*.h")


def _native_current(session: nox.Session) -> None:
    """Rebuild the extension when libwd or the uapi header changed since it was built, so
    that tests run what the tree holds (the venv's stamp only follows the requirements)."""
    built = list((USERLIB / "src" / "wrapdrive").glob("_native*.so"))
    sources = [*NATIVE_SOURCES, *(p for g in NATIVE_GLOBS for p in USERLIB.glob(g))]
    newest = max(p.stat().st_mtime for p in sources)
    if built and min(p.stat().st_mtime for p in built) >= newest:
        return
    session.log("libwd changed since wrapdrive._native was built: rebuilding it")
    _run(session, PY, "-m", "pip", "install", "-q", "--no-deps", "-e", str(USERLIB))


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """ruff; mypy --strict on userlib/src and tools; checkpatch --strict and sparse on kernel/.
    Every check runs even when an earlier one fails, so one run shows every problem."""
    checks = {
        "ruff": [PY, "-m", "ruff", "check", "tools", "tests", "userlib", "noxfile.py"],
        "mypy": [PY, "-m", "mypy", "--strict", "userlib/src", "tools"],
        "checkpatch+sparse": [*BUILD, "lint", "--kernel", "6.1", "--kernel", "6.12"],
    }
    failed = []
    for name, cmd in checks.items():
        try:
            _run(session, *cmd)
        except CommandFailed:
            failed.append(name)
    if failed:
        session.error("lint failed: " + ", ".join(failed))


@nox.session(venv_backend="none")
def unit(session: nox.Session) -> None:
    """Host tests (no VM): userlib on a fake sysfs, the ABI mirror, the tools, and the
    harness's verdicts re-judged on recorded guest output (tests/host/data/guest)."""
    _native_current(session)
    _run(session, PY, "-m", "pytest", "tests/host", "-q", "-rfE", f"--durations={DURATIONS}", *session.posargs)


@nox.session(venv_backend="none")
def docs(session: nox.Session) -> None:
    """docs/ with Sphinx into .cache/docs/html, warnings are errors: the user's and the
    driver author's guides, deployment, the ABI, the Python API from its docstrings and
    include/wrapdrive.h's kernel-doc (the kernel's scripts/kernel-doc, from the cached
    6.12 kernel: run after tools/build.py kernels)."""
    out = REPO / ".cache" / "docs"
    _run(session, PY, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
         "-d", str(out / "doctrees"), str(REPO / "docs"), str(out / "html"), *session.posargs)


@nox.session(venv_backend="none")
def build(session: nox.Session) -> None:
    """wrapdrive.ko and wd_dummy.ko against both kernels, W=1, warnings are errors; from
    clean (--werror implies it), so a warning of an unchanged file is seen every time."""
    for k in ("6.1", "6.12"):
        _run(session, *BUILD, "build", "--kernel", k, "--werror")


# The fuzzer and the load test at full size (10,500 inputs; 60 s and 100 SIGKILLs) belong
# to vm-debug; the production kernels' sessions run them smaller.  The environment wins.
QUICK_PROOF = {"WD_FUZZ_INPUTS": "150", "WD_LOAD_SECONDS": "20", "WD_LOAD_KILLS": "20"}


def _vm(session: nox.Session, kernel: str, *options: str, env: dict[str, str] | None = None) -> None:
    """Extra arguments go to pytest; -k EXPR selects in-guest tests (forwarded into the guest)."""
    env = {k: v for k, v in (env or {}).items() if k not in os.environ}
    _native_current(session)
    _run(session, PY, "-m", "pytest", "tests/qemu", "--kernel", kernel, "-rfE", "-v", f"--durations={DURATIONS}",
         *options, *session.posargs, limit=LIMIT_VM, **env)  # fmt: skip


# The VM suite's coverage in CI: every in-guest file on 6.1, the kernel's files (ours
# through VFIO, sysfs and debugfs, and wd_edu's) on 6.12 as well, each edu machine on both:
#
#   kernel                default machine            edu-iommu    edu-legacy
#   6.1, debug (vm-debug)  test_kernel_*.py           test_edu_*   -
#   6.1, Debian's          test_userlib_*.py          -            test_edu_*
#   6.12, Debian's         test_kernel_*.py           test_edu_*   test_edu_*
#
# The userlib's files drive the kernel only through libwd's ioctls, mmaps and rings, which
# the kernel's files drive directly on both kernels.  Everything everywhere would cost CI
# about 12 minutes it does not have (issue 11: 60 with the debug kernel's build); a
# session's own --guest-tests / --machine options replace its selection, e.g.
# `nox -s vm-6.12 -- --guest-tests tests/qemu/guest` for every file on 6.12.
GUEST = "tests/qemu/guest"
KERNEL_FILES, USERLIB_FILES, EDU_FILES = (f"{GUEST}/test_{kind}_*.py" for kind in ("kernel", "userlib", "edu"))
PROD_61 = ((USERLIB_FILES, EDU_FILES), ("default", "edu-legacy"))
PROD_612 = ((KERNEL_FILES, EDU_FILES), ("default", "edu-iommu", "edu-legacy"))
DEBUG_61 = ((KERNEL_FILES, EDU_FILES), ("default", "edu-iommu"))


def _selection(files_and_machines: tuple[tuple[str, ...], tuple[str, ...]], posargs: list[str]) -> list[str]:
    """--guest-tests and --machine options for these files and machines, unless the
    session's own arguments choose."""
    files, machines = files_and_machines
    out = [] if any(a.startswith("--guest-tests") for a in posargs) else \
        [opt for pattern in files for opt in ("--guest-tests", pattern)]
    if not any(a.startswith("--machine") for a in posargs):
        out += [opt for m in machines for opt in ("--machine", m)]
    return out


@nox.session(name="vm-6.1", venv_backend="none")
def vm_61(session: nox.Session) -> None:
    """Boot Debian's 6.1: the userlib's files on the default machine, wd_edu's on the
    edu-legacy machine (the kernel's files run on the debug 6.1: vm-debug)."""
    _vm(session, "6.1", *_selection(PROD_61, session.posargs), env=QUICK_PROOF)


@nox.session(name="vm-6.12", venv_backend="none")
def vm_612(session: nox.Session) -> None:
    """Boot Debian's 6.12: the kernel's files on the default machine, wd_edu's on both edu
    machines."""
    _vm(session, "6.12", *_selection(PROD_612, session.posargs), env=QUICK_PROOF)


# Under KASAN, lockdep and kmemleak in a TCG guest everything runs several times slower:
# every in-guest limit is multiplied by this.
DEBUG_TIMEOUT_SCALE = "5"
DEBUG_VM_TIMEOUT = "3400"
# What vm-debug runs (DEBUG_61, above): every file that drives the kernel.  The
# userlib's files there would cost 15 minutes (CLI 279 s, nonroot 250 s, libwd 207 s,
# measured), and wd_edu without an IOMMU 5 more for the same DMA API calls (DMA_API_DEBUG
# checks them above the IOMMU): `nox -s vm-debug -- --guest-tests tests/qemu/guest
# --machine default --machine edu-iommu --machine edu-legacy` runs everything there.
# test_4096_queues makes this many (each mdev costs more the more there are, there: 512
# took 104 s); the production kernels make all 4,096.
DEBUG_PROOF = {"WD_POOL_QUEUES": "256"}


@nox.session(name="debug-kernel", venv_backend="none")
def debug_kernel(session: nox.Session) -> None:
    """Start building the debug kernel in the background when it is not cached, at idle
    priority (SCHED_IDLE): it takes only the CPU the sessions run after it leave idle, and
    vm-debug waits for it (the cache's lock), or builds it itself if this build failed.
    Its output: ~/.cache/wrapdrive/kernels/logs/ (the path is in .cache/debug-kernel.log)."""
    key = subprocess.run([PY, str(REPO / "tools" / "debugkernel.py"), "key"], capture_output=True, text=True)
    if key.returncode == 0 and key.stdout.strip().endswith(" finished"):
        session.log(f"the debug kernel is cached: {key.stdout.split()[1]}")
        return
    log = REPO / ".cache" / "debug-kernel.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(["chrt", "--idle", "0", *BUILD, "kernels", "--debug"], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    session.log(f"building the debug kernel at idle priority in the background (pid {proc.pid}, log {log})")


@nox.session(name="vm-debug", venv_backend="none")
def vm_debug(session: nox.Session) -> None:
    """The kernel's files of the VM suite (DEBUG_61) on the debug kernel (KASAN, lockdep,
    kmemleak, UBSAN ...: tools/debug.config), built first when ~/.cache/wrapdrive/kernels
    has none for the current inputs (10-12 min on 2 idle cores; a build the debug-kernel
    session started is waited for).  The run counts only on a clean boot with lockdep still
    on at the start and at the end (the verdict checks both).  It holds the fuzzer, fault
    injection and the load test at full size; the session's end scans kmemleak.  CI runs it
    last, when the debug-kernel session's build has had the longest to finish."""
    _run(session, *BUILD, "kernels", "--debug", limit=LIMIT_VM)
    _vm(session, "debug", "--guest-timeout-scale", DEBUG_TIMEOUT_SCALE, "--vm-timeout", DEBUG_VM_TIMEOUT,
        *_selection(DEBUG_61, session.posargs), env=DEBUG_PROOF)  # fmt: skip


@nox.session(venv_backend="none")
def dkms(session: nox.Session) -> None:
    """Debian's dkms builds and installs the modules from kernel/dkms.conf for 6.1 and
    6.12 (in .cache/dkms, nothing on the host's /lib/modules), and a guest of each
    kernel loads them as kernel/modules-load.d/wrapdrive.conf says (tests/dkms).
    Not a default session: two builds and two boots."""
    _run(session, PY, "-m", "pytest", "tests/dkms", "-rfE", "-v", *session.posargs, limit=LIMIT_VM)


@nox.session(venv_backend="none")
def demo(session: nox.Session) -> None:
    """Build, boot 6.1, and have the dummy engine hash, checksum and compress a file."""
    kernel = os.environ.get("WD_DEMO_KERNEL", "6.1")
    _native_current(session)
    _run(session, *BUILD, "run", "--kernel", kernel, "--build", "--", "python", "tools/demo.py")


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """`wrapdrive bench` in a 6.1 guest, then the table, JSON and plot in bench-results/.

    Not part of the default sessions: figures from a TCG guest are ratios, never a
    pass/fail test.  The C paths run userlib/libwd/wd_bench, built here first.  Nothing
    is pinned.  Extra arguments go to `wrapdrive bench` (e.g. --rounds 3)."""
    # The in-process crc32c reference and the plot: only this session needs them.
    _run(session, PY, "-m", "pip", "install", "-q", "crc32c==2.9.post0", "matplotlib==3.11.2")
    _run(session, "make", "-s", "-C", str(REPO / "userlib" / "libwd"), "wd_bench")
    out = REPO / "bench-results"
    out.mkdir(exist_ok=True)
    shared = REPO / ".cache" / "vm" / "bench.json"  # .cache/vm is writable from the guest
    # The edu-legacy machine adds QEMU's edu device (and wd_edu) for the device-DMA row.
    _run(session, *BUILD, "run", "--kernel", "6.1", "--machine", "edu-legacy", "--build", "--",
         "wrapdrive", "bench", "--json", str(shared), *session.posargs, limit=LIMIT_VM)
    (out / "bench.json").write_text(shared.read_text())
    _run(session, PY, "-c", "import sys, pathlib; from wrapdrive.bench import plot; "
         "plot(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))",
         str(out / "bench.json"), str(out / "bench.png"))
    session.log(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
