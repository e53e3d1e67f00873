#!/usr/bin/env python3
"""WrapDrive's debug kernel: Debian's linux-source built with the kernel's own checkers.

The recipe (build_kernel), each step a command line built by a pure function below:

  1. unpack /usr/src/linux-source-<v>.tar.xz into a temporary folder of the cache, and apply
     tools/debug-patches/<v>/*.patch in name order (each says why it is carried)
  2. virtme-configkernel --defconfig --custom tools/debug.config   (virtme-ng's minimal config)
  3. kconfiglib: the fragment again (virtme-ng appends its own must-haves after --custom, debug
     info among them) and WrapDrive's Kconfig needs (tools/kconfig_check.py); make olddefconfig
  4. kconfiglib on the final .config: every line of the fragment and every requirement must
     hold, else the build stops naming the symbols that were lost and what they depend on
  5. make bzImage modules, make modules_install (output to a log file whose path is printed)
  6. boot/vmlinuz-<release> beside lib/modules/<release> (virtme-ng walks up from the image to
     the first folder holding lib/modules), the build tree kept as KDIR for our modules with
     its object files dropped, a manifest; then the temporary folder is renamed into place.

A kernel lives in ~/.cache/wrapdrive/kernels/debug-<source>-<key>/ where key hashes everything
that decides the product (the source tarball's content, the patches, the fragment, the Kconfig
requirements, this recipe's version, the compiler, virtme-ng's version).  Only a finished
build has that name, so an unpacked or half-built tree is never taken for a kernel; a lock
makes a second builder wait for the first instead of building the same kernel twice.

  tools/build.py kernels --debug          build it, or reuse it
  tools/debugkernel.py key                print the cache key and the folder (no build)
  tools/debugkernel.py check TREE         the step-4 check on any kernel tree's .config
  tools/debugkernel.py boots --count 5    boot it N times: each boot clean, lockdep still on

Kernel specs for `--kernel`: `debug` (6.1), `debug-6.1`, `debug-6.12`.
Only the standard library is imported at start (kconfiglib when a config is checked).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))

FRAGMENT = TOOLS / "debug.config"
PATCHES = TOOLS / "debug-patches"  # <source name>/*.patch, applied with `git apply -p1`
# Bump when the recipe changes what it produces (steps, layout, make targets): the cache key
# changes with it and the next run builds a new kernel instead of reusing an older one.
RECIPE_VERSION = 1
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wrapdrive" / "kernels"
KEY_CHARS = 16  # of the sha256, in folder names
SPEC = "debug"  # --kernel debug: the default source
DEFAULT_SOURCE = "6.1"

# Seconds. A cold build takes 11 min or more on 2 idle cores; 39-54 min were measured on a
# machine shared with other builds and guests.
TIMEOUT_UNPACK = 900.0
TIMEOUT_CONFIG = 600.0
TIMEOUT_BUILD = float(os.environ.get("WD_DEBUG_BUILD_TIMEOUT", 3 * 3600))
TIMEOUT_INSTALL = 900.0
TIMEOUT_QUERY = 60.0
PROGRESS_EVERY = 120.0  # a line on the terminal while make runs


class DebugKernelError(RuntimeError):
    """A step of the recipe failed; the message says which, and where its log is."""


@dataclass(frozen=True)
class Source:
    """A kernel source tarball from Debian's linux-source-<version> package."""

    name: str  # "6.1": spec suffix and folder name
    tarball: Path
    package: str


SOURCES: dict[str, Source] = {
    "6.1": Source("6.1", Path("/usr/src/linux-source-6.1.tar.xz"), "linux-source-6.1"),
    "6.12": Source("6.12", Path("/usr/src/linux-source-6.12.tar.xz"), "linux-source-6.12"),
}


def is_spec(spec: str) -> bool:
    """True for the --kernel values naming a debug kernel: debug, debug-6.1, debug-6.12."""
    return spec == SPEC or (spec.startswith(SPEC + "-") and spec[len(SPEC) + 1 :] in SOURCES)


def source_of(spec: str) -> Source:
    if not is_spec(spec):
        raise DebugKernelError(f"{spec!r} is not a debug kernel spec ({', '.join(specs())})")
    return SOURCES[DEFAULT_SOURCE if spec == SPEC else spec[len(SPEC) + 1 :]]


def specs() -> list[str]:
    return [SPEC] + [f"{SPEC}-{n}" for n in SOURCES]


# --------------------------------------------------------------------------- the fragment

_SET = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")


def parse_fragment(text: str) -> dict[str, str]:
    """Symbol -> wanted value ('y', 'm', 'n', a number, or a string without its quotes).

    Lines are `CONFIG_X=v` or `# CONFIG_X is not set`; other comments and blank lines are
    ignored; anything else, or a symbol given twice, is an error (a fragment that says two
    things about one symbol has no single meaning to check)."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        m = _SET.match(line) or _UNSET.match(line)
        if m is None:
            if line and not line.startswith("#"):
                raise DebugKernelError(f"fragment line {n}: not CONFIG_X=v nor '# CONFIG_X is not set': {raw!r}")
            continue
        name = m.group(1)
        value = m.group(2) if m.re is _SET else "n"
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if name in out:
            raise DebugKernelError(f"fragment line {n}: CONFIG_{name} given twice")
        out[name] = value
    return out


@dataclass(frozen=True)
class Lost:
    """A fragment symbol whose final value is not the one asked for."""

    name: str
    wanted: str
    got: str
    why: str = ""  # the unmet dependencies, when Kconfig knows them

    def __str__(self) -> str:
        why = f" ({self.why})" if self.why else ""
        return f"CONFIG_{self.name}: wanted {self.wanted!r}, got {self.got!r}{why}"


def _unmet(kconf: Any, sym: Any) -> str:
    """The `depends on` of sym when it is not satisfied, with the value of each symbol in it."""
    import kconfiglib

    if sym.direct_dep is kconf.y or kconfiglib.expr_value(sym.direct_dep) == 2:
        return ""
    names = [
        f"{s.name}={s.str_value or 'n'}"
        for s in kconfiglib.expr_items(sym.direct_dep)
        if isinstance(s, kconfiglib.Symbol) and not s.is_constant
    ]
    return f"depends on {kconfiglib.expr_str(sym.direct_dep)}: " + ", ".join(names)


def lost_symbols(kconf: Any, fragment: Mapping[str, str]) -> list[Lost]:
    """Fragment lines that the configuration in kconf does not honour."""
    import kconfiglib

    lost = []
    for name, wanted in fragment.items():
        sym = kconf.syms.get(name)
        if sym is None or not sym.nodes:
            lost.append(Lost(name, wanted, "<absent>", "no such symbol in this kernel's Kconfig"))
            continue
        if sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE):
            got = sym.str_value or "n"
        else:
            got = sym.str_value
        if got != wanted:
            lost.append(Lost(name, wanted, got, _unmet(kconf, sym)))
    return lost


def apply_fragment(kconf: Any, fragment: Mapping[str, str]) -> None:
    """Assign every fragment value with kconfiglib (the last word over virtme-ng's list)."""
    for name, value in fragment.items():
        sym = kconf.syms.get(name)
        if sym is not None and sym.nodes:
            sym.set_value(value)


def config_problems(tree: Path, fragment: Mapping[str, str]) -> list[str]:
    """Everything wrong with tree/.config: lost fragment lines, unmet WrapDrive needs."""
    import kconfig_check

    kconf = kconfig_check.load(tree / "Kconfig", tree / ".config")
    problems = [str(lost) for lost in lost_symbols(kconf, fragment)]
    problems += [f"CONFIG_{s}: required by WrapDrive, not set" for s in kconfig_check.missing_symbols(kconf)]
    return problems


def configure(tree: Path, fragment: Mapping[str, str]) -> list[str]:
    """Step 3 (kconfiglib part): the fragment again, then WrapDrive's needs; writes .config.
    Returns the requirements kconfiglib could not enable (reported again by the check)."""
    import kconfig_check

    kconf = kconfig_check.load(tree / "Kconfig", tree / ".config")
    apply_fragment(kconf, fragment)
    still = kconfig_check.enable_missing(kconf)
    kconf.write_config(str(tree / ".config"))
    return still


# --------------------------------------------------------------------------- the cache key


def requirements_text() -> str:
    """WrapDrive's Kconfig needs, and how prompt-less ones get enabled, as text: a change to
    either changes the key."""
    import kconfig_check

    lines = [repr(r) for r in kconfig_check.REQUIREMENTS]
    lines += [f"{sym} through {via}" for sym, via in sorted(kconfig_check.ENABLED_THROUGH.items())]
    return "\n".join(lines)


def patches_of(source: Source, root: Path = PATCHES) -> list[Path]:
    """The patches carried for @source, in the order they are applied."""
    return sorted((root / source.name).glob("*.patch"))


def patches_text(patches: Sequence[Path]) -> str:
    """Names and contents of @patches, as the cache key sees them."""
    return "".join(f"{p.name}\0{p.read_text()}\0" for p in patches)


def cache_key(
    *, source_digest: str, patches: str, fragment: str, requirements: str, recipe: int, compiler: str, virtme: str
) -> str:
    """sha256 over everything that decides what the build produces."""
    h = hashlib.sha256()
    for part in (
        f"source {source_digest}",
        f"patches {patches}",
        f"fragment {fragment}",
        f"requirements {requirements}",
        f"recipe {recipe}",
        f"compiler {compiler}",
        f"virtme-ng {virtme}",
    ):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def compiler_id(cc: str = "gcc") -> str:
    """First line of `gcc --version`: the compiler decides the code (and KASAN's checks)."""
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=TIMEOUT_QUERY, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        raise DebugKernelError(f"`{cc} --version` failed: {e}; install gcc (tools/build.py deps)") from e
    return out.stdout.splitlines()[0].strip()


def virtme_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("virtme-ng")
    except metadata.PackageNotFoundError as e:
        raise DebugKernelError("virtme-ng is not installed in this Python: run tools/bootstrap.sh") from e


def key_for(source: Source) -> str:
    if not source.tarball.is_file():
        raise DebugKernelError(
            f"{source.tarball} missing: install Debian's {source.package} (apt-get install {source.package})"
        )
    return cache_key(
        source_digest=file_digest(source.tarball),
        patches=patches_text(patches_of(source)),
        fragment=FRAGMENT.read_text(),
        requirements=requirements_text(),
        recipe=RECIPE_VERSION,
        compiler=compiler_id(),
        virtme=virtme_version(),
    )


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class DebugKernel:
    """A finished debug kernel in the cache."""

    source: str
    key: str
    root: Path

    @property
    def name(self) -> str:
        """Target name: the build folder of our modules and WD_KERNEL in the guest."""
        return f"{SPEC}-{self.source}-{self.key[:KEY_CHARS]}"

    @property
    def manifest(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / "manifest.json").read_text())
        return data

    @property
    def release(self) -> str:
        return str(self.manifest["release"])

    @property
    def image(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def kdir(self) -> Path:
        """The kernel build tree our out-of-tree modules build against (make -C KDIR M=...)."""
        return self.root / "build"

    @property
    def config(self) -> Path:
        return self.root / "boot" / f"config-{self.release}"


def folder_name(source: str, key: str) -> str:
    return f"{SPEC}-{source}-{key[:KEY_CHARS]}"


def is_finished(root: Path) -> bool:
    """A finished kernel: its manifest (written last, before the rename), image, modules, KDIR."""
    try:
        release = json.loads((root / "manifest.json").read_text())["release"]
    except (OSError, ValueError, KeyError):
        return False
    return (
        (root / "boot" / f"vmlinuz-{release}").is_file()
        and (root / "lib" / "modules" / release / "modules.dep").is_file()
        and (root / "build" / "Module.symvers").is_file()
    )


def cached(spec: str = SPEC, cache: Path | None = None) -> DebugKernel | None:
    """The finished kernel for spec's current inputs, or None."""
    source = source_of(spec)
    key = key_for(source)
    root = (cache or CACHE_ROOT) / folder_name(source.name, key)
    return DebugKernel(source.name, key, root) if is_finished(root) else None


# --------------------------------------------------------------------------- command lines


def unpack_cmd(tarball: Path, dest: Path) -> list[str]:
    return ["tar", "-xJf", str(tarball), "-C", str(dest), "--strip-components=1"]


def patch_cmd(patch: Path) -> list[str]:
    """Run in the tree; git, not patch(1): git is on every machine that cloned this."""
    return ["git", "apply", "-p1", "--whitespace=nowarn", str(patch)]


def configkernel_cmd(virtme_configkernel: str, fragment: Path) -> list[str]:
    return [virtme_configkernel, "--defconfig", "--custom", str(fragment)]


def make_cmd(tree: Path, *targets: str, jobs: int = 1, **variables: str) -> list[str]:
    cmd = ["make", "-C", str(tree), f"-j{jobs}"]
    cmd += [f"{k}={v}" for k, v in sorted(variables.items())]
    return cmd + list(targets)


def build_cmd(tree: Path, jobs: int) -> list[str]:
    """The kernel and its modules; no `all` (vmlinux is a prerequisite of bzImage anyway)."""
    return make_cmd(tree, "bzImage", "modules", jobs=jobs)


def install_cmd(tree: Path, dest: Path, jobs: int) -> list[str]:
    return make_cmd(tree, "modules_install", jobs=jobs, INSTALL_MOD_PATH=str(dest))


def find_virtme_configkernel() -> str:
    here = Path(sys.executable).parent / "virtme-configkernel"
    if here.exists():
        return str(here)
    venv = REPO / ".venv" / "bin" / "virtme-configkernel"
    if venv.exists():
        return str(venv)
    found = shutil.which("virtme-configkernel")
    if not found:
        raise DebugKernelError("virtme-configkernel (virtme-ng) not found: run tools/bootstrap.sh")
    return found


# Build products the module build against KDIR never reads: objects, archives of the
# kernel's own objects, the intermediate vmlinux files.  scripts/ and tools/ keep theirs
# (host programs kbuild may check), and vmlinux stays for objdump on a report's address.
_PRUNE_SUFFIXES = (".o", ".a", ".ko", ".mod.c", ".lto.o", ".dwo")
_PRUNE_NAMES = ("vmlinux.o", "vmlinux.a", ".tmp_vmlinux.kallsyms1", ".tmp_vmlinux.kallsyms2", ".tmp_vmlinux.btf")


def prune_candidates(tree: Path) -> Iterator[Path]:
    """Files of a built tree that out-of-tree module builds do not need."""
    keep_dirs = {tree / "scripts", tree / "tools"}
    for dirpath, dirnames, filenames in os.walk(tree):
        d = Path(dirpath)
        if d in keep_dirs:
            dirnames[:] = []
            continue
        for f in filenames:
            if f.endswith(_PRUNE_SUFFIXES) or f in _PRUNE_NAMES or f.startswith(".tmp_vmlinux"):
                yield d / f


def du_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for f in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return total


# --------------------------------------------------------------------------- running steps

Log = Callable[[str], None]


def _log(msg: str) -> None:
    print(f"[debugkernel] {msg}", flush=True)


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run_step(
    what: str,
    cmd: Sequence[str],
    *,
    logfile: Path,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log: Log = _log,
    progress_every: float = PROGRESS_EVERY,
) -> float:
    """Run cmd with its output appended to logfile; kill its process group at timeout.
    Returns the seconds it took; raises DebugKernelError naming the step and the log."""
    t0 = time.monotonic()
    with logfile.open("a") as out:
        out.write(f"\n===== {what}: {shlex.join(cmd)} (cwd {cwd or os.getcwd()})\n")
        out.flush()
        try:
            proc = subprocess.Popen(
                list(cmd), cwd=cwd, env=None if env is None else dict(env), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            raise DebugKernelError(f"{what}: cannot run {cmd[0]}: {e}") from e
        next_note = t0 + progress_every
        while True:
            try:
                rc = proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                now = time.monotonic()
                if now - t0 > timeout:
                    _kill_group(proc)
                    raise DebugKernelError(
                        f"{what}: no result after {timeout:.0f}s, killed; log: {logfile}\n{_tail(logfile)}"
                    ) from None
                if now >= next_note:
                    last = _tail(logfile, 1).strip()
                    log(f"{what}: {now - t0:.0f}s so far; last log line: {last[:100]}")
                    next_note = now + progress_every
            except BaseException:
                _kill_group(proc)
                raise
    took = time.monotonic() - t0
    if rc != 0:
        raise DebugKernelError(f"{what} failed (exit {rc}) after {took:.0f}s; log: {logfile}\n{_tail(logfile)}")
    return took


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def locked(path: Path, log: Log = _log) -> Iterator[None]:
    """An exclusive lock on path (a second builder of the same kernel waits)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is building this kernel ({path}); waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(cache: Path, log: Log = _log) -> None:
    """Temporary folders of builds whose process is gone (killed, machine rebooted)."""
    for d in cache.glob(".tmp-*"):
        m = re.search(r"-pid(\d+)$", d.name)
        if m and not _pid_alive(int(m.group(1))):
            log(f"removing {d} (left by an interrupted build)")
            shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------- the build


def ensure(spec: str = SPEC, *, jobs: int | None = None, log: Log = _log, cache: Path | None = None) -> DebugKernel:
    """The debug kernel for spec: reused from the cache, else built (minutes: say so)."""
    cache = cache or CACHE_ROOT
    t0 = time.monotonic()
    source = source_of(spec)
    key = key_for(source)
    root = cache / folder_name(source.name, key)
    if is_finished(root):
        dk = DebugKernel(source.name, key, root)
        log(f"{spec}: cached {dk.release} in {root} (checked in {time.monotonic() - t0:.1f}s)")
        return dk
    with locked(cache / f".lock-{folder_name(source.name, key)}", log):
        if is_finished(root):  # built by the process we waited for
            return DebugKernel(source.name, key, root)
        remove_stale_temps(cache, log)
        return build_kernel(source, key, cache=cache, jobs=jobs or os.cpu_count() or 2, log=log)


def build_kernel(source: Source, key: str, *, cache: Path, jobs: int, log: Log = _log) -> DebugKernel:
    """Steps 1-6 of the module docstring into cache/.tmp-..., renamed when finished."""
    name = folder_name(source.name, key)
    final = cache / name
    tmp = cache / f".tmp-{name}-pid{os.getpid()}"
    logs = cache / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    logfile = logs / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    tree = tmp / "build"
    fragment = parse_fragment(FRAGMENT.read_text())
    log(
        f"building the debug kernel {name} from {source.tarball} with -j{jobs}: about 1,250 CPU-seconds, "
        "so 11 min or more on 2 idle cores, far longer on a busy machine"
    )
    log(f"build log: {logfile}")
    times: dict[str, float] = {}
    t_all = time.monotonic()
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tree.mkdir(parents=True)
        times["unpack"] = run_step("unpack", unpack_cmd(source.tarball, tree), logfile=logfile, timeout=TIMEOUT_UNPACK)
        patches = patches_of(source)
        for patch in patches:
            run_step(f"patch {patch.name}", patch_cmd(patch), logfile=logfile, timeout=TIMEOUT_CONFIG, cwd=tree)
        log(f"unpacked in {times['unpack']:.0f}s, {len(patches)} patch(es) applied; configuring")
        t = time.monotonic()
        run_step(
            "virtme-configkernel",
            configkernel_cmd(find_virtme_configkernel(), FRAGMENT),
            logfile=logfile, timeout=TIMEOUT_CONFIG, cwd=tree,
        )  # fmt: skip
        configure(tree, fragment)
        run_step("olddefconfig", make_cmd(tree, "olddefconfig"), logfile=logfile, timeout=TIMEOUT_CONFIG)
        problems = config_problems(tree, fragment)
        times["configure"] = time.monotonic() - t
        if problems:
            raise DebugKernelError(
                f"the configuration lost {len(problems)} symbol(s) of {FRAGMENT.name} or WrapDrive's needs "
                f"(after olddefconfig, {tree / '.config'}):\n  " + "\n  ".join(problems)
            )
        log(f"configured in {times['configure']:.0f}s: all {len(fragment)} fragment lines and WrapDrive's needs hold")
        times["make"] = run_step("make", build_cmd(tree, jobs), logfile=logfile, timeout=TIMEOUT_BUILD, log=log)
        log(f"kernel and modules built in {times['make']:.0f}s")
        times["install"] = run_step("modules_install", install_cmd(tree, tmp, jobs), logfile=logfile,
                                    timeout=TIMEOUT_INSTALL)  # fmt: skip
        release = (tree / "include" / "config" / "kernel.release").read_text().strip()
        finish_layout(tmp, tree, release)
        freed = 0
        for f in prune_candidates(tree):
            freed += f.stat().st_size
            f.unlink()
        manifest = {
            "source": source.name,
            "tarball": str(source.tarball),
            "patches": [p.name for p in patches],
            "key": key,
            "release": release,
            "recipe": RECIPE_VERSION,
            "jobs": jobs,
            "seconds": {k: round(v, 1) for k, v in times.items()} | {"total": round(time.monotonic() - t_all, 1)},
            "pruned_bytes": freed,
            "log": str(logfile),
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if not is_finished(tmp):
            raise DebugKernelError(f"{tmp}: incomplete after the build (image, modules.dep or Module.symvers missing)")
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    dk = DebugKernel(source.name, key, final)
    size = du_bytes(final)
    log(
        f"{name}: {release} ready in {time.monotonic() - t_all:.0f}s "
        f"({', '.join(f'{k} {v:.0f}s' for k, v in times.items())}); {size / 2**30:.2f} GiB in {final}"
    )
    return dk


def finish_layout(root: Path, tree: Path, release: str) -> None:
    """boot/ files beside lib/modules; the modules' build link made relative (survives the rename)."""
    boot = root / "boot"
    boot.mkdir(exist_ok=True)
    shutil.copy2(tree / "arch" / "x86" / "boot" / "bzImage", boot / f"vmlinuz-{release}")
    shutil.copy2(tree / ".config", boot / f"config-{release}")
    shutil.copy2(tree / "System.map", boot / f"System.map-{release}")
    moddir = root / "lib" / "modules" / release
    for link in ("build", "source"):
        p = moddir / link
        if p.is_symlink():
            p.unlink()
    (moddir / "build").symlink_to(Path("..") / ".." / ".." / tree.name)


# --------------------------------------------------------------------------- boot check

BOOT_MARK = "WD-DEBUGKERNEL"
# Lines that are a report of one of the checkers, or the end of lock debugging.  Unlike a
# bare "lockdep" pattern, these do not match the boot banner "RCU lockdep checking is enabled.";
# debugobjects and DMA-API debugging report through WARN() (their banners are not reports).
REPORT = re.compile(
    r"BUG:|WARNING:|\bOops\b|Call Trace:|general protection|Kernel panic|UBSAN:|KASAN:"
    r"|kmemleak:.*(?:new suspected|disabl)|Disabling lock debugging|possible (?:circular|recursive) locking"
    r"|inconsistent lock state|suspicious RCU usage|list_(?:add|del) corruption|INFO: lockdep"
    r"|blocked for more than \d+ seconds|detected stalls? on CPU|soft lockup|hard LOCKUP"
)


def find_reports(lines: Iterable[str]) -> list[str]:
    """The kernel log lines that are a checker's report (or lockdep turning itself off)."""
    return [ln for ln in lines if REPORT.search(ln)]


# Prefix of the kernel log's lines in the boot check's output: `build.py run` relays only the
# guest's lines that do not look like kernel log lines (the console has those already).
KMSG_PREFIX = "kmsg| "


def boot_check_command() -> list[str]:
    """Guest command: lockdep's state, then the whole kernel log, between markers."""
    script = (
        f"echo {BOOT_MARK}-LOCKDEP; cat /proc/lockdep_stats; "
        f"echo {BOOT_MARK}-DMESG; dmesg | sed 's/^/{KMSG_PREFIX}/'; echo {BOOT_MARK}-END"
    )
    return ["sh", "-c", script]


@dataclass
class BootVerdict:
    debug_locks: int | None
    reports: list[str]
    uptime_at_script: float | None
    dmesg_lines: int
    saw_banner: bool = False  # the log's "Linux version" line: the whole log was read

    @property
    def clean(self) -> bool:
        return self.debug_locks == 1 and not self.reports and self.saw_banner


def judge_boot(output: str) -> BootVerdict:
    """Parse boot_check_command()'s output (as relayed by `build.py run`)."""
    section = ""
    debug_locks: int | None = None
    reports: list[str] = []
    uptime: float | None = None
    n = 0
    banner = False
    for line in output.splitlines():
        if line.startswith(f"{BOOT_MARK}-"):
            section = line[len(BOOT_MARK) + 1 :].strip()
            continue
        if section == "LOCKDEP":
            m = re.match(r"\s*debug_locks:\s*(\d+)", line)
            if m:
                debug_locks = int(m.group(1))
        elif section == "DMESG":
            line = line.removeprefix(KMSG_PREFIX)
            n += 1
            banner = banner or "Linux version" in line
            reports += find_reports([line])
            if uptime is None and "virtme-ng-init: starting script" in line:
                m = re.match(r"\[\s*([0-9.]+)\]", line)
                uptime = float(m.group(1)) if m else None
    return BootVerdict(debug_locks, reports, uptime, n, banner)


def boots(spec: str, count: int, timeout: float, log: Log = _log, save: Path | None = None) -> int:
    """Boot spec count times without our modules; each boot must be clean, lockdep on.
    save: a folder that keeps each boot's output (boot-N.txt)."""
    bad = 0
    # vng runs virtme-run through a shell: the venv's bin must be on PATH even when the venv
    # is not activated
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for i in range(1, count + 1):
        cmd = [sys.executable, str(TOOLS / "build.py"), "run", "--kernel", spec, "--no-modules"]
        cmd += ["--timeout", str(timeout), "--", *boot_check_command()]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout + 120, env=env)
            out, rc = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:
            out, rc = str(e.stdout or ""), 124
        v = judge_boot(out)
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            (save / f"boot-{i}.txt").write_text(out)
        ok = rc == 0 and v.clean
        bad += not ok
        log(
            f"boot {i}/{count}: {'clean' if ok else 'NOT CLEAN'}; exit {rc}, debug_locks {v.debug_locks}, "
            f"{len(v.reports)} report line(s), script at {v.uptime_at_script}s uptime, "
            f"{time.monotonic() - t0:.0f}s wall, {v.dmesg_lines} dmesg lines"
            + ("" if v.saw_banner else " (NOT the whole log: no 'Linux version' line)")
        )
        for r in v.reports[:20]:
            log(f"    {r}")
        if rc != 0 and not v.dmesg_lines:
            log("    " + "\n    ".join(out.splitlines()[-30:]))
    return 1 if bad else 0


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/debugkernel.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the debug kernel, or reuse it (= tools/build.py kernels --debug)")
    b.add_argument("--kernel", default=SPEC, choices=specs())
    b.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    k = sub.add_parser("key", help="print the cache key and folder of a debug kernel (builds nothing)")
    k.add_argument("--kernel", default=SPEC, choices=specs())
    c = sub.add_parser("check", help="check a kernel tree's .config against the fragment and WrapDrive's needs")
    c.add_argument("tree", type=Path)
    bt = sub.add_parser("boots", help="boot the debug kernel N times: clean log, debug_locks still 1")
    bt.add_argument("--kernel", default=SPEC, choices=specs())
    bt.add_argument("--count", type=int, default=5)
    bt.add_argument("--save", type=Path, help="keep each boot's output in this folder")
    bt.add_argument("--timeout", type=float, default=1200.0, help="seconds per boot (KASAN under TCG is slow)")
    args = p.parse_args(argv)
    try:
        if args.cmd == "build":
            ensure(args.kernel, jobs=args.jobs)
            return 0
        if args.cmd == "key":
            source = source_of(args.kernel)
            key = key_for(source)
            root = CACHE_ROOT / folder_name(source.name, key)
            print(f"{key} {root} {'finished' if is_finished(root) else 'not built'}")
            return 0
        if args.cmd == "check":
            problems = config_problems(args.tree, parse_fragment(FRAGMENT.read_text()))
            for pr in problems:
                print(pr)
            verdict = f"{len(problems)} problem(s)" if problems else "every line holds"
            print(f"{args.tree / '.config'}: {verdict}")
            return 1 if problems else 0
        if args.cmd == "boots":
            ensure(args.kernel)
            return boots(args.kernel, args.count, args.timeout, save=args.save)
    except DebugKernelError as e:
        print(f"tools/debugkernel.py {args.cmd}: {e}", file=sys.stderr)
        return 2
    raise AssertionError(args.cmd)


if __name__ == "__main__":
    sys.exit(main())
