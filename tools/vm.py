"""Booting a kernel with virtme-ng: command lines, the KVM probe, the guest setup, boot().

boot() is the one way anything boots a guest (tools/build.py run, the VM suite, the demo):
it returns an output folder holding the whole console (console.log), the guest's kernel
log (kmsg-*.txt), the command's status and the session's start and end records;
callers only judge that folder (verdict.py).

The guest sees the host's filesystem read-only (virtme-ng overlays /etc, /usr, /tmp ...
with tmpfs), so the project's venv and sources are usable inside it as they are.  Results
come back through one read-write folder, .cache/vm, shared with --rwdir.

Note: virtme-ng's QEMU opens /proc/self/fd/1 and /proc/self/fd/2 again; when those are
regular files the guest's output overwrites the caller's from offset 0.  Every boot here
therefore runs vng with pipes and relays the output.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from guest_session import MARK_MODULES
from machine import DEFAULT as DEFAULT_MACHINE
from machine import Machine

REPO = Path(__file__).resolve().parent.parent
VM_CACHE = REPO / ".cache" / "vm"
KVM_PROBE_CACHE = REPO / ".cache" / "kvm-probe"
VENV_BIN = REPO / ".venv" / "bin"
GUEST_SESSION = REPO / "tools" / "guest_session.py"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
CONSOLE_LOG = "console.log"
BOOT_JSON = "boot.json"
KEEP_OUTDIRS = 24

# Stock modules the queue path needs, loaded before ours.
STOCK_MODULES: tuple[str, ...] = ("vfio", "vfio_iommu_type1", "mdev")
# Ours, in load order (wd_dummy links against wrapdrive).
OUR_MODULES: tuple[str, ...] = ("wrapdrive", "wd_dummy")
# Host environment variables handed to the in-guest tests as they are (the fuzzer's seed and
# size, the load test's duration, how many queues the pool test makes, how many allocations
# each fault-injection test fails): virtme-ng passes no environment into the guest.
GUEST_ENV_PREFIXES: tuple[str, ...] = ("WD_FUZZ_", "WD_LOAD_", "WD_POOL_", "WD_FAULT_")
# Every module kernel/ builds: also those only a machine profile loads (tools/machine.py).
BUILT_MODULES: tuple[str, ...] = (*OUR_MODULES, "wd_edu")

CACHED_ROOT_TAG = "wdcachedroot"
DEFAULT_CPUS = 2
DEFAULT_MEMORY_MB = 2048
DEFAULT_BOOT_TIMEOUT = 600.0
# A log buffer that holds a whole session (creating 4096 mdevs logs 4096 lines), and no
# rate limit on the markers the harness writes through /dev/kmsg.
KERNEL_ARGS: tuple[str, ...] = ("log_buf_len=16M", "printk.devkmsg=on")
_KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\]")

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
    verbose: bool = True,
    cached_root: bool = True,
    kernel_args: Sequence[str] = KERNEL_ARGS,
    qemu_opts: Sequence[str] = (),
) -> list[str]:
    """The vng command line that boots image and runs exec_cmd in the guest.

    verbose: virtme-ng 1.42 in script mode otherwise boots with `quiet loglevel=0` and
    sends the console to /dev/null, so a panic's oops never reaches the host; with it the
    console (loglevel 7) comes out on vng's stderr, which boot() keeps in console.log.
    qemu_opts: a machine profile's devices, before any other option of ours."""
    cmd = [vng, "--run", str(image), "--cpus", str(cpus), "--memory", f"{memory_mb}M"]
    if qemu_opts:
        cmd.append(f"--qemu-opts={shlex.join(qemu_opts)}")
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
    cmd += [f"--append={a}" for a in kernel_args]
    cmd += ["--cwd", str(cwd)]
    if verbose:
        cmd.append("--verbose")
    cmd += ["--exec", exec_cmd]
    return cmd


def find_vng() -> str:
    """vng from the running interpreter's venv, else the project's venv, else PATH."""
    for d in (Path(sys.executable).parent, VENV_BIN):
        if (d / "vng").exists():
            return str(d / "vng")
    found = shutil.which("vng")
    if not found:
        raise FileNotFoundError("vng (virtme-ng) not found: run tools/bootstrap.sh")
    return found


def tool_env(vng: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment vng runs in.  vng starts `virtme-run` (and that its helpers) by name,
    so the folder holding vng (its venv's bin) comes first on PATH whatever the caller's
    PATH is; then the project's venv; then the caller's PATH, or the system's."""
    env = dict(os.environ if base is None else base)
    first = [str(Path(vng).parent), str(VENV_BIN)]
    rest = env.get("PATH") or SYSTEM_PATH
    parts = list(dict.fromkeys(first + [p for p in rest.split(os.pathsep) if p]))
    env["PATH"] = os.pathsep.join(parts)
    return env


def guest_env_path() -> str:
    """PATH for the guest: the venv's bin first so `python`, `pytest`, `wrapdrive` resolve."""
    bins = [str(Path(sys.executable).parent)]
    if VENV_BIN.is_dir() and str(VENV_BIN) not in bins:
        bins.append(str(VENV_BIN))
    return ":".join(bins + ["/usr/local/sbin", "/usr/local/bin", SYSTEM_PATH])


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
    outdir: Path,
    *,
    path: str | None = None,
    python: str | None = None,
    cached_dirs: Sequence[str] | None = None,
    stock: Sequence[str] = STOCK_MODULES,
    ours: Sequence[str] = OUR_MODULES,
    machine: Machine = DEFAULT_MACHINE,
) -> str:
    """Bash that prepares a guest: stock modules, our modules (and their stock
    dependencies), debugfs, the environment the in-guest tests rely on, and the session's
    start record (guest_session.py start).  A marker in the kernel log separates the boot
    from what follows the loading of our modules.

    module_dir None boots without our modules (only `build.py run --no-modules`).
    machine: its modules are loaded after `ours`, with their parameters; WD_MACHINE names it.
    """
    q = shlex.quote
    py = q(python or sys.executable)
    session = f"{py} {q(str(GUEST_SESSION))}"
    lines = [
        "set -e",
        f"export PATH={q(path or guest_env_path())}",
        f"export WD_KERNEL={q(kernel_name)}",
        f"export WD_MACHINE={q(machine.name)}",
        f"export WD_OUT={q(str(outdir))}",
        "export PYTHONDONTWRITEBYTECODE=1",
        *(f"export {k}={q(v)}" for k, v in sorted(os.environ.items()) if k.startswith(GUEST_ENV_PREFIXES)),
        "mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug",
        f'wd_die() {{ echo "wd-guest: $*" >&2; {session} dmesg --out "$WD_OUT" setup-failed; exit 125; }}',
    ]
    lines += cached_mount_lines(python_dirs() if cached_dirs is None else cached_dirs)
    for m in stock:
        lines.append(f"modprobe {q(m)} || wd_die 'modprobe {m} failed'")
    lines.append(f"echo {q('<5>' + MARK_MODULES)} > /dev/kmsg || echo 'wd-guest: cannot write to /dev/kmsg' >&2")
    if module_dir is not None:
        lines.append(f"export WD_MODULE_DIR={q(str(module_dir))}")
        params = dict(machine.modules)
        ours = (*ours, *(m for m in machine.module_names if m not in ours))
        ours_set = " ".join(ours)
        for m in ours:
            ko = q(str(module_dir / f"{m}.ko"))
            args = "".join(f" {q(a)}" for a in params.get(m, ()))
            lines += [
                f"[ -f {ko} ] || wd_die 'missing {module_dir}/{m}.ko: run tools/build.py build'",
                # load the stock modules ours need (insmod does not resolve them)
                f"for d in $(modinfo -F depends {ko} | tr , ' '); do",
                f'  case " {ours_set} " in *" $d "*) ;; *) modprobe "$d" || wd_die "modprobe $d";; esac',
                "done",
                f"grep -q '^{m} ' /proc/modules || insmod {ko}{args} || wd_die 'insmod {m}.ko failed'",
            ]
    loaded = ",".join([*stock, *(ours if module_dir is not None else ())])
    lines.append(f'{session} start --out "$WD_OUT" --modules {q(loaded)} || wd_die "session start failed"')
    lines.append("set +e")
    return "\n".join(lines) + "\n"


def session_script(setup: str, command: Sequence[str], rmmod: Sequence[str], python: str | None = None) -> str:
    """Setup, the command, its status into $WD_OUT/status, then the end of the session
    (guest_session.py end: leaks, rmmod in `rmmod` order, kmemleak, the whole kernel log)."""
    q = shlex.quote
    session = f"{q(python or sys.executable)} {q(str(GUEST_SESSION))}"
    return (
        setup
        + f"{shlex.join(command)}\n"
        + "wd_rc=$?\n"
        + 'echo $wd_rc > "$WD_OUT/status"; sync\n'
        + f'{session} end --out "$WD_OUT" --rmmod {q(",".join(rmmod))}\n'
        + "exit $wd_rc\n"
    )


# --------------------------------------------------------------------------- booting


@dataclass(frozen=True)
class Guest:
    """A kernel to boot, and the machine around it."""

    name: str  # 6.1, 6.12 or a tree's name: WD_KERNEL in the guest
    image: Path
    module_dir: Path | None  # where our .ko files are; None: boot without them
    kvm: bool
    cpus: int = DEFAULT_CPUS
    memory_mb: int = DEFAULT_MEMORY_MB
    machine: Machine = DEFAULT_MACHINE

    @property
    def modules(self) -> tuple[str, ...]:
        """Ours that this guest loads, in load order (none without a module_dir)."""
        if self.module_dir is None:
            return ()
        return (*OUR_MODULES, *(m for m in self.machine.module_names if m not in OUR_MODULES))


@dataclass
class Boot:
    """How one boot ended; what happened in it is in outdir, for verdict.py to judge."""

    outdir: Path
    returncode: int
    elapsed: float
    timed_out: bool = False
    killed: str = ""  # why the host killed the guest ('' when it ended by itself)

    @property
    def console(self) -> Path:
        return self.outdir / CONSOLE_LOG


def new_outdir(kind: str, name: str, root: Path | None = None, keep: int = KEEP_OUTDIRS) -> Path:
    """A fresh output folder under .cache/vm (shared read-write with guests); only the
    newest `keep` folders of earlier boots are kept."""
    root = VM_CACHE if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    old = sorted((d for d in root.iterdir() if (d / "guest.sh").exists()), key=lambda d: d.stat().st_mtime)
    for d in old[: max(0, len(old) - keep)]:
        shutil.rmtree(d, ignore_errors=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = root / f"{kind}-{Path(name).name}-{stamp}-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


Watch = Callable[[], str | None]


def boot(
    guest: Guest,
    command: Sequence[str],
    outdir: Path,
    *,
    timeout: float,
    watch: Watch | None = None,
    echo: Callable[[str], None] | None = None,
    log: Callable[[str], None] = print,
    vng: str | None = None,
) -> Boot:
    """THE way a guest is booted: set up (modules, debugfs, environment), run command, end
    the session (guest_session.py end), keep the whole console in outdir/console.log.

    watch() is polled every few seconds; a string it returns is the reason to kill the
    guest now (a test stuck past its limit in a guest that did not power itself off).
    echo gets every line vng prints that is not a kernel console line."""
    vng = vng or find_vng()
    setup = guest_setup_script(guest.module_dir, guest.name, outdir, machine=guest.machine)
    rmmod = tuple(reversed(guest.modules))
    script = outdir / "guest.sh"
    script.write_text(session_script(setup, command, rmmod))
    cmd = vng_command(
        guest.image,
        exec_cmd=f"bash {shlex.quote(str(script))}",
        kvm=guest.kvm,
        cpus=guest.cpus,
        memory_mb=guest.memory_mb,
        rwdirs=[VM_CACHE],
        vng=vng,
        kernel_args=(*KERNEL_ARGS, *guest.machine.kernel_args),
        qemu_opts=guest.machine.qemu_opts,
    )
    console = outdir / CONSOLE_LOG
    what = f"{guest.name}{'' if guest.machine == DEFAULT_MACHINE else ' on ' + guest.machine.name}"
    log(f"booting {what} ({'KVM' if guest.kvm else 'TCG'}), limit {timeout:.0f}s; console log: {console}")
    res = run_vng(cmd, timeout, console=console, echo=echo, watch=watch, env=tool_env(vng))
    result = Boot(outdir, res.returncode, res.elapsed, res.timed_out, res.killed)
    info = {"command": cmd, "returncode": res.returncode, "elapsed": round(res.elapsed, 1),
            "timed_out": res.timed_out, "killed": res.killed, "kernel": guest.name,
            "machine": guest.machine.name}  # fmt: skip
    (outdir / BOOT_JSON).write_text(json.dumps(info, indent=1))
    return result


# --------------------------------------------------------------------------- running


@dataclass
class VngResult:
    returncode: int
    elapsed: float
    timed_out: bool = False
    killed: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def is_kernel_line(line: str) -> bool:
    """A kernel console line ('[   12.345678] ...'), as opposed to the command's output."""
    return bool(_KERNEL_LINE.match(line))


def run_vng(
    cmd: Sequence[str],
    timeout: float,
    *,
    console: Path | None = None,
    echo: Callable[[str], None] | None = None,
    watch: Watch | None = None,
    env: dict[str, str] | None = None,
    poll: float = 2.0,
) -> VngResult:
    """Run a vng command with pipes (stdout: the command's; stderr: the console and the
    command's stderr), every line into `console` as it comes and the non-kernel lines to
    echo; kill the whole process group (vng and QEMU) past timeout or when watch() says."""
    start = time.monotonic()
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        cwd=REPO,
        env=env,
    )
    lines: list[str] = []
    lock = threading.Lock()
    sink = console.open("w", errors="replace") if console is not None else None

    def pump(stream: IO[bytes] | None) -> None:
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\r\n")
            with lock:
                lines.append(line)
                if sink is not None:
                    sink.write(line + "\n")
                    sink.flush()
            if echo and not is_kernel_line(line):
                echo(line)

    pumps = [threading.Thread(target=pump, args=(s,), daemon=True) for s in (proc.stdout, proc.stderr)]
    for t in pumps:
        t.start()
    timed_out, killed = False, ""
    try:
        while True:
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                timed_out, killed = True, f"still running after {timeout:.0f}s"
                _kill_group(proc)
                break
            try:
                proc.wait(timeout=min(poll, left))
                break
            except subprocess.TimeoutExpired:
                pass
            reason = watch() if watch else None
            if reason:
                killed = reason
                _kill_group(proc)
                break
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        for t in pumps:
            t.join(timeout=10)
        if sink is not None:
            with lock:
                if killed:
                    sink.write(f"[wd-host] guest killed: {killed}\n")
                sink.close()
    return VngResult(
        returncode=proc.returncode if proc.returncode is not None else -9,
        elapsed=time.monotonic() - start,
        timed_out=timed_out,
        killed=killed,
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
