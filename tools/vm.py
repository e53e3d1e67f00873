"""Booting a kernel with virtme-ng: command lines, the KVM probe, the guest setup, splats.

The guest sees the host's filesystem read-only (virtme-ng overlays /etc, /usr, /tmp ...
with tmpfs), so the project's venv and sources are usable inside it as they are.  Results
come back through one read-write folder, .cache/vm, shared with --rwdir.

Note: virtme-ng's QEMU opens /proc/self/fd/1 and /proc/self/fd/2 again; when those are
regular files the guest's output overwrites the caller's from offset 0.  Every boot here
therefore runs vng with pipes and relays the output.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VM_CACHE = REPO / ".cache" / "vm"
KVM_PROBE_CACHE = REPO / ".cache" / "kvm-probe"

# Stock modules the queue path needs, loaded before ours.
STOCK_MODULES: tuple[str, ...] = ("vfio", "vfio_iommu_type1", "mdev")
# Ours, in load order (wd_dummy links against wrapdrive).
OUR_MODULES: tuple[str, ...] = ("wrapdrive", "wd_dummy")

CACHED_ROOT_TAG = "wdcachedroot"
DEFAULT_CPUS = 2
DEFAULT_MEMORY_MB = 2048
DEFAULT_BOOT_TIMEOUT = 600.0

# Lines of a guest's kernel log that fail a run.
SPLAT_PATTERNS: tuple[str, ...] = (
    r"BUG:",
    r"WARNING:",
    r"\bOops\b",
    r"Call Trace",
    r"general protection",
    r"kernel BUG at",
    r"Kernel panic",
    r"KASAN",
    r"UBSAN",
    r"lockdep",
    r"possible circular locking dependency",
    r"possible recursive locking",
    r"inconsistent lock state",
    r"suspicious RCU usage",
    r"refcount_t:",
    r"list_(add|del) corruption",
    r"soft lockup",
    r"hard LOCKUP",
    r"blocked for more than \d+ seconds",
    r"rcu_(sched|preempt) detected stall",
)
_SPLAT = re.compile("|".join(f"(?:{p})" for p in SPLAT_PATTERNS))


def find_splats(lines: Iterable[str]) -> list[str]:
    """The kernel log lines that show a bug, warning, oops or lock/memory checker report."""
    return [ln for ln in lines if _SPLAT.search(ln)]


# --------------------------------------------------------------------------- KVM


def kvm_probe_cmd(image: Path, qemu: str = "qemu-system-x86_64") -> list[str]:
    """A KVM boot of `image` with no root fs: a working KVM panics in a second or two
    ('VFS: Unable to mount root fs'); a broken nested KVM aborts or never prints."""
    return [
        qemu, "-accel", "kvm", "-cpu", "host", "-machine", "q35", "-m", "256",
        "-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio",
        "-kernel", str(image),
        "-append", "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 loglevel=4",
    ]  # fmt: skip


KVM_OK = re.compile(r"Kernel panic|Unable to mount root|Linux version")


def probe_kvm(
    image: Path,
    timeout: float = 12.0,
    run: Callable[[list[str], float], str | None] | None = None,
    dev: str = "/dev/kvm",
) -> bool:
    """True when a KVM guest of `image` gets as far as printing kernel messages.

    `run(cmd, timeout)` returns the guest's output, or None when it timed out or could
    not start; injectable for tests.
    """
    if not os.access(dev, os.R_OK | os.W_OK):
        return False
    runner = run or _run_probe
    out = runner(kvm_probe_cmd(image), timeout)
    return bool(out and KVM_OK.search(out))


def _run_probe(cmd: list[str], timeout: float) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, check=False)
    except (subprocess.TimeoutExpired, OSError):
        return None
    return proc.stdout + proc.stderr


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def use_kvm(image: Path, probe: Callable[[Path], bool] = probe_kvm, cache: Path | None = None) -> bool:
    """Decide KVM or TCG: $WD_KVM=0/1 forces; else the probe's answer, cached per host boot."""
    forced = os.environ.get("WD_KVM")
    if forced in ("0", "1"):
        return forced == "1"
    cache = KVM_PROBE_CACHE if cache is None else cache
    key = boot_id()
    try:
        cached_key, _, verdict = cache.read_text().strip().partition(" ")
        if cached_key == key and verdict in ("kvm", "tcg"):
            return verdict == "kvm"
    except OSError:
        pass
    ok = probe(image)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(f"{key} {'kvm' if ok else 'tcg'}\n")
    except OSError:
        pass
    return ok


# --------------------------------------------------------------------------- command lines


def numa_args(memory_mb: int, cpus: int, nodes: int = 2) -> list[str]:
    """--numa options splitting memory and CPUs evenly over `nodes` nodes."""
    if nodes <= 1:
        return []
    if cpus % nodes or memory_mb % nodes:
        raise ValueError(f"{cpus} CPUs / {memory_mb} MiB do not split over {nodes} NUMA nodes")
    per_cpu, per_mem = cpus // nodes, memory_mb // nodes
    args = []
    for n in range(nodes):
        first, last = n * per_cpu, (n + 1) * per_cpu - 1
        cpu = f"{first}" if first == last else f"{first}-{last}"
        args += ["--numa", f"{per_mem}M,cpus={cpu}"]
    return args


def vng_command(
    image: Path,
    *,
    exec_cmd: str,
    kvm: bool,
    cpus: int = DEFAULT_CPUS,
    memory_mb: int = DEFAULT_MEMORY_MB,
    numa_nodes: int = 2,
    rwdirs: Sequence[Path] = (),
    cwd: Path = REPO,
    vng: str = "vng",
    verbose: bool = False,
    cached_root: bool = True,
) -> list[str]:
    """The vng command line that boots image and runs exec_cmd in the guest."""
    cmd = [vng, "--run", str(image), "--cpus", str(cpus), "--memory", f"{memory_mb}M"]
    cmd += numa_args(memory_mb, cpus, numa_nodes)
    if numa_nodes > 1:
        # One socket per node: with QEMU's default (all CPUs cores of one socket) the CPUs
        # of different nodes share an LLC, and the guest kernel WARNs in topology_sane().
        cmd.append(f"--qemu-opts=-smp {cpus},sockets={numa_nodes},cores={cpus // numa_nodes},threads=1")
    if not kvm:
        cmd.append("--disable-kvm")
    for d in rwdirs:
        cmd += ["--rwdir", str(d)]
    if cached_root:
        # A second read-only export of / that the guest mounts with cache=loose and binds
        # over the Python installs (see guest_setup_script): importing pytest over the
        # uncached root 9p mount costs twice as long under TCG.
        cmd.append(
            f"--qemu-opts=-fsdev local,id=wdcache,path=/,security_model=none,readonly=on,multidevs=remap"
            f" -device virtio-9p-pci,fsdev=wdcache,mount_tag={CACHED_ROOT_TAG}"
        )
    cmd += ["--cwd", str(cwd)]
    if verbose:
        cmd.append("--verbose")
    cmd += ["--exec", exec_cmd]
    return cmd


def find_vng() -> str:
    """vng from the running interpreter's venv if there, else PATH."""
    here = Path(sys.executable).parent / "vng"
    if here.exists():
        return str(here)
    found = shutil.which("vng")
    if not found:
        raise FileNotFoundError("vng (virtme-ng) not found: run tools/bootstrap.sh")
    return found


def guest_env_path() -> str:
    """PATH for the guest: the venv's bin first so `python`, `pytest`, `wrapdrive` resolve."""
    bins = [str(Path(sys.executable).parent)]
    venv = REPO / ".venv" / "bin"
    if venv.is_dir() and str(venv) not in bins:
        bins.append(str(venv))
    return ":".join(bins + ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])


def python_dirs() -> list[str]:
    """Folders the guest's Python imports from: the standard library and the venv's
    site-packages (not a whole prefix: with Debian's python3 that would be /usr)."""
    import sysconfig

    paths = sysconfig.get_paths()
    dirs = [os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    venv = REPO / ".venv"
    if venv.is_dir():
        dirs += [str(p.resolve()) for p in venv.glob("lib/python3*/site-packages")]
    out: list[str] = []
    for d in sorted(set(dirs), key=len):
        if os.path.isdir(d) and d.count("/") >= 3 and not any(d.startswith(o + "/") for o in out):
            out.append(d)
    return out


def cached_mount_lines(dirs: Sequence[str]) -> list[str]:
    """Guest bash: mount the cached export and bind it over dirs; on failure go on uncached."""
    q = shlex.quote
    lines = [
        "mkdir -p /run/wdcache",
        f"if mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose,msize=512000,ro {CACHED_ROOT_TAG} /run/wdcache"
        " 2>/dev/null; then",
    ]
    for d in dirs:
        lines.append(f"  mount --bind {q('/run/wdcache' + d)} {q(d)} || echo 'wd-guest: no cached {d}' >&2")
    lines.append("fi")
    return lines


def guest_setup_script(
    module_dir: Path | None,
    kernel_name: str,
    *,
    path: str | None = None,
    cached_dirs: Sequence[str] | None = None,
    stock: Sequence[str] = STOCK_MODULES,
    ours: Sequence[str] = OUR_MODULES,
) -> str:
    """Bash that prepares a guest: stock modules, our modules (and their stock
    dependencies), debugfs, and the environment the in-guest tests rely on.

    module_dir None boots without our modules (only `build.py run --no-modules`).
    """
    q = shlex.quote
    lines = [
        "set -e",
        f"export PATH={q(path or guest_env_path())}",
        f"export WD_KERNEL={q(kernel_name)}",
        "export PYTHONDONTWRITEBYTECODE=1",
        "mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug",
        'wd_die() { echo "wd-guest: $*" >&2; dmesg | tail -n 40 >&2; exit 125; }',
    ]
    lines += cached_mount_lines(python_dirs() if cached_dirs is None else cached_dirs)
    for m in stock:
        lines.append(f"modprobe {q(m)} || wd_die 'modprobe {m} failed'")
    if module_dir is not None:
        lines.append(f"export WD_MODULE_DIR={q(str(module_dir))}")
        ours_set = " ".join(ours)
        for m in ours:
            ko = q(str(module_dir / f"{m}.ko"))
            lines += [
                f"[ -f {ko} ] || wd_die 'missing {module_dir}/{m}.ko: run tools/build.py build'",
                # load the stock modules ours need (insmod does not resolve them)
                f"for d in $(modinfo -F depends {ko} | tr , ' '); do",
                f'  case " {ours_set} " in *" $d "*) ;; *) modprobe "$d" || wd_die "modprobe $d";; esac',
                "done",
                f"grep -q '^{m} ' /proc/modules || insmod {ko} || wd_die 'insmod {m}.ko failed'",
            ]
    lines.append("set +e")
    return "\n".join(lines) + "\n"


def run_script(setup: str, command: Sequence[str], outdir: Path) -> str:
    """Setup, then command; its status to outdir/status, the kernel log to outdir/dmesg."""
    q = shlex.quote
    return (
        setup
        + "set +e\n"
        + f"{shlex.join(command)}\n"
        + "wd_rc=$?\n"
        + f"dmesg > {q(str(outdir / 'dmesg'))} 2>&1\n"
        + f"echo $wd_rc > {q(str(outdir / 'status'))}\n"
        + "exit $wd_rc\n"
    )


# --------------------------------------------------------------------------- running


class BootError(RuntimeError):
    """The guest could not be booted, or did not finish in time."""


@dataclass
class BootResult:
    returncode: int
    output: str
    elapsed: float
    timed_out: bool = False
    lines: list[str] = field(default_factory=list)


def run_vng(
    cmd: Sequence[str],
    timeout: float,
    echo: Callable[[str], None] | None = None,
) -> BootResult:
    """Run a vng command with pipes, relaying each output line to echo; kill the whole
    process group (vng and QEMU) when it outlives timeout."""
    start = time.monotonic()
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=REPO,
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\r\n")
            lines.append(line)
            if echo:
                echo(line)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
    except BaseException:
        _kill_group(proc)
        raise
    t.join(timeout=10)
    return BootResult(
        returncode=proc.returncode if proc.returncode is not None else -9,
        output="\n".join(lines),
        elapsed=time.monotonic() - start,
        timed_out=timed_out,
        lines=lines,
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue
