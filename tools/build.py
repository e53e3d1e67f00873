#!/usr/bin/env python3
"""WrapDrive's build, lint and boot tool.

Laid out like the kernel's KUnit tool (tools/testing/kunit/kunit.py): each step is a
subcommand, and each step is a small function building a command line plus a thin
layer running it, so the command lines are tested on the host without building or
booting anything.

  deps          add bookworm-backports, install the Debian packages (root)
  kernels       fetch + unpack Debian's 6.1 and 6.12 into .cache/kernels/<name>;
                --debug: build (or reuse) the debug kernel instead (tools/debugkernel.py)
  config PATH   check a kernel source tree's Kconfig symbols (--enable-missing fixes)
  build         build wrapdrive.ko and wd_dummy.ko against a kernel into .cache/build/<name>
  lint          checkpatch --strict and sparse on kernel/
  run           boot a kernel with virtme-ng, load the modules, run a command

Only the standard library is imported at start: `deps` runs before the venv exists.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import debugkernel  # noqa: E402
import guest_session  # noqa: E402
import kernels  # noqa: E402
import machine as machine_profiles  # noqa: E402
import verdict  # noqa: E402
import vm  # noqa: E402

REPO = kernels.REPO
KERNEL_SRC = REPO / "kernel"
BUILD_CACHE = REPO / ".cache" / "build"
CHECKPATCH_DIR = REPO / ".cache" / "checkpatch"
LINUX_SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
KNOWN_KERNELS = ("6.1", "6.12")
MODULES = tuple(f"{m}.ko" for m in vm.BUILT_MODULES)
# Seconds a step may take (a module build takes 3-15 s, checkpatch 1 s, the extraction
# of checkpatch from linux-source 15-35 s; generous for a loaded machine).
MAKE_TIMEOUT = 900.0
CHECKPATCH_TIMEOUT = 300.0
TAR_TIMEOUT = 600.0

# Build products never copied from kernel/ into a build folder, nor deleted from it.
_PRODUCT = re.compile(
    r"(\.o|\.ko|\.mod|\.mod\.c|\.cmd|\.a|\.d|\.tmp|\.order|\.symvers|\.dwo)$|^\.tmp|^Module\.symvers$|^modules\.order$"
)


def log(msg: str) -> None:
    print(f"[build.py] {msg}", flush=True)


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """Where modules for one kernel are built and what boots it."""

    name: str  # build folder name under .cache/build
    kdir: Path
    image: Path | None  # None: a source tree not built yet
    source_tree: Path | None = None  # set for a kernel source tree given as PATH

    @property
    def build_dir(self) -> Path:
        return BUILD_CACHE / self.name


def source_tree_name(path: Path) -> str:
    """Build folder for a source tree: src-<basename>, unique per absolute path."""
    import hashlib

    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f"src-{path.resolve().name}-{digest}"


def resolve_target(spec: str, prepare: bool = True) -> Target:
    """6.1 / 6.12 (cached Debian kernels), debug (tools/debugkernel.py) or a PATH to a kernel source tree."""
    if debugkernel.is_spec(spec):
        return debug_target(spec, prepare)
    if spec in KNOWN_KERNELS:
        k = kernels.prepare_kernel(spec, log=log) if prepare else kernels.kernel(spec)
        return Target(spec, k.kdir, k.image)
    path = Path(spec).expanduser()
    if not (path / "Kconfig").is_file() or not (path / "Makefile").is_file():
        raise SystemExit(f"--kernel {spec}: neither {'/'.join(KNOWN_KERNELS)} nor a kernel source tree")
    image = path / "arch/x86/boot/bzImage"
    return Target(source_tree_name(path), path.resolve(), image if image.exists() else None, path.resolve())


def debug_target(spec: str, prepare: bool = True) -> Target:
    """The debug kernel: built on first use (minutes), then taken from ~/.cache/wrapdrive."""
    try:
        dk = debugkernel.ensure(spec, log=log) if prepare else debugkernel.cached(spec)
    except debugkernel.DebugKernelError as e:
        raise kernels.SetupError(str(e)) from e
    if dk is None:
        raise kernels.SetupError(f"{spec}: not built yet; run tools/build.py kernels --debug")
    return Target(dk.name, dk.kdir, dk.image)


# --------------------------------------------------------------------------- command lines


def make_modules_cmd(
    kdir: Path, mdir: Path, *, jobs: int = 2, w: int = 1, sparse: int = 0, btf: bool = True
) -> list[str]:
    """make for our out-of-tree modules; sparse=2 checks every file (C=2)."""
    cmd = ["make", "-C", str(kdir), f"M={mdir}", f"-j{jobs}"]
    if w:
        cmd.append(f"W={w}")
    if sparse:
        cmd.append(f"C={sparse}")
    if not btf:
        cmd.append("CONFIG_DEBUG_INFO_BTF_MODULES=")
    cmd.append("modules")
    return cmd


# Out of tree, checkpatch cannot see the kernel's headers: it would flag the kernel's own
# CamelCase API (zlib_deflateInit2 ...) that it learns from include/ in a tree.
CHECKPATCH_IGNORE = ("CAMELCASE",)
# It skips BIT_MACRO for include/uapi/ (BIT() is not visible to user space); ours is kernel/uapi/.
CHECKPATCH_IGNORE_UAPI = ("BIT_MACRO",)


def checkpatch_cmd(script: Path, files: Sequence[Path], ignore: Sequence[str] = CHECKPATCH_IGNORE) -> list[str]:
    cmd = ["perl", str(script), "--no-tree", "--strict", "--show-types", "--color=never"]
    if ignore:
        cmd.append("--ignore=" + ",".join(ignore))
    return cmd + ["-f", *map(str, files)]


def checkpatch_cmds(script: Path, files: Sequence[Path], root: Path = KERNEL_SRC) -> list[list[str]]:
    """One run for the user-space ABI headers (kernel/uapi), one for the rest."""
    uapi = [f for f in files if (root / "uapi") in f.parents]
    rest = [f for f in files if f not in uapi]
    cmds = []
    if rest:
        cmds.append(checkpatch_cmd(script, rest))
    if uapi:
        cmds.append(checkpatch_cmd(script, uapi, CHECKPATCH_IGNORE + CHECKPATCH_IGNORE_UAPI))
    return cmds


def module_files(src: Path = KERNEL_SRC) -> tuple[str, ...]:
    """The .ko files a build of src must produce: ours for kernel/, else `obj-m` of its Kbuild."""
    if src == KERNEL_SRC:
        return MODULES
    kbuild = src / "Kbuild" if (src / "Kbuild").exists() else src / "Makefile"
    found = re.findall(r"^obj-m\s*\+?:?=\s*(.+)$", kbuild.read_text(), re.M)
    return tuple(w.replace(".o", ".ko") for line in found for w in line.split())


def checkpatch_extract_cmd(tarball: Path, dest: Path) -> list[str]:
    top = "linux-source-6.1/scripts"
    return [
        "tar", "-xJf", str(tarball), "-C", str(dest), "--strip-components=2",
        f"{top}/checkpatch.pl", f"{top}/spelling.txt", f"{top}/const_structs.checkpatch",
    ]  # fmt: skip


def compiler_warnings(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if re.search(r"\b(warning|error):", ln)]


def kernel_sources(root: Path = KERNEL_SRC) -> list[Path]:
    """The C sources and headers of kernel/ that lint checks."""
    return sorted(p for p in root.rglob("*") if p.suffix in (".c", ".h") and p.is_file())


# --------------------------------------------------------------------------- steps


def sync_tree(src: Path, dst: Path) -> list[str]:
    """Mirror src's sources into dst keeping mtimes (make stays incremental); drop sources
    that left src. Build products in dst are left alone. Returns the changed paths."""
    changed: list[str] = []
    want: set[Path] = set()
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src)
        if f.is_dir() or _PRODUCT.search(f.name):
            continue
        want.add(rel)
        out = dst / rel
        st = f.stat()
        if out.exists():
            ost = out.stat()
            if ost.st_size == st.st_size and int(ost.st_mtime) == int(st.st_mtime):
                continue
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, out)
        changed.append(str(rel))
    if dst.exists():
        for f in sorted(dst.rglob("*")):
            rel = f.relative_to(dst)
            if f.is_file() and not _PRODUCT.search(f.name) and rel not in want:
                f.unlink()
                changed.append(f"-{rel}")
    return changed


def have_pahole() -> bool:
    return shutil.which("pahole") is not None


def run_tool(cmd: list[str], timeout: float, cwd: Path | None = None) -> tuple[int, str]:
    """Run a build or lint command with its time limit; (status, stdout+stderr)."""
    log(shlex.join(cmd))
    try:
        rc, out, err = kernels.run_limited(cmd, timeout, cwd=cwd)
    except kernels.SetupError as e:
        raise SystemExit(str(e)) from e
    text = out + err
    sys.stdout.write(text)
    sys.stdout.flush()
    return rc, text


def run_make(cmd: list[str]) -> tuple[int, str]:
    return run_tool(cmd, MAKE_TIMEOUT)


def make_clean(kdir: Path, out: Path) -> None:
    """`make M=out clean`: the next make compiles everything, so each W=1 warning is
    printed again (an up-to-date tree rebuilds nothing and shows none)."""
    rc, _ = run_make(["make", "-C", str(kdir), f"M={out}", "clean"])
    if rc:
        raise SystemExit(f"make clean in {out} failed (exit {rc})")


def build(
    target: Target,
    *,
    jobs: int = 2,
    werror: bool = False,
    clean: bool = False,
    build_dir: Path | None = None,
    src: Path = KERNEL_SRC,
) -> Path:
    """Copy src (kernel/) to the target's build folder and build both modules there.
    With werror (or clean) from clean: an up-to-date tree would rebuild nothing and an
    earlier W=1 warning would never be seen again."""
    if not (src / "Kbuild").exists() and not (src / "Makefile").exists():
        raise SystemExit(f"{src} has no Kbuild/Makefile yet")
    out = build_dir or target.build_dir
    out.mkdir(parents=True, exist_ok=True)
    sync_tree(src, out)
    if werror or clean:
        make_clean(target.kdir, out)
    t0 = time.monotonic()
    rc, text = run_make(make_modules_cmd(target.kdir, out, jobs=jobs, btf=have_pahole()))
    log(f"{target.name}: make finished in {time.monotonic() - t0:.1f}s, exit {rc}")
    if rc:
        raise SystemExit(f"{target.name}: module build failed")
    missing = [m for m in module_files(src) if not (out / m).exists()]
    if missing:
        raise SystemExit(f"{target.name}: build produced no {', '.join(missing)} in {out}")
    warnings = compiler_warnings(text)
    if warnings and werror:
        raise SystemExit(f"{target.name}: {len(warnings)} compiler warning(s) with W=1:\n" + "\n".join(warnings))
    log(f"{target.name}: {' '.join(MODULES)} in {out} ({len(warnings)} warnings)")
    return out


def ensure_checkpatch() -> Path:
    script = CHECKPATCH_DIR / "checkpatch.pl"
    if script.exists():
        return script
    if not LINUX_SOURCE_TARBALL.exists():
        raise SystemExit(f"{LINUX_SOURCE_TARBALL} missing: install linux-source-6.1 (tools/build.py deps)")
    tmp = Path(tempfile.mkdtemp(dir=REPO / ".cache"))
    rc, _ = run_tool(checkpatch_extract_cmd(LINUX_SOURCE_TARBALL, tmp), TAR_TIMEOUT)
    if rc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"cannot extract checkpatch.pl from {LINUX_SOURCE_TARBALL} (tar exit {rc})")
    if CHECKPATCH_DIR.exists():
        shutil.rmtree(CHECKPATCH_DIR)
    tmp.rename(CHECKPATCH_DIR)
    return script


def lint(specs: Sequence[str] = ("6.1",), *, jobs: int = 2) -> int:
    """checkpatch --strict on kernel/*.[ch], then sparse (C=2) with W=1 against each kernel."""
    failed = 0
    files = kernel_sources()
    if not files:
        raise SystemExit("kernel/ has no .c/.h files to lint")
    script = ensure_checkpatch()
    bad = 0
    for cmd in checkpatch_cmds(script, files):
        # cwd: checkpatch leaves a .checkpatch-camelcase.* cache in its cwd when in a git tree
        rc, _ = run_tool(cmd, CHECKPATCH_TIMEOUT, cwd=CHECKPATCH_DIR)
        bad += rc != 0
    if bad:
        log("checkpatch --strict: FAILED")
        failed += 1
    else:
        log("checkpatch --strict: clean")
    for spec in specs:
        target = resolve_target(spec)
        out = BUILD_CACHE / f"{target.name}-sparse"
        out.mkdir(parents=True, exist_ok=True)
        sync_tree(KERNEL_SRC, out)
        make_clean(target.kdir, out)  # W=1 warnings of files that did not change are shown again
        rc, text = run_make(make_modules_cmd(target.kdir, out, jobs=jobs, sparse=2, btf=have_pahole()))
        warnings = compiler_warnings(text)
        if rc or warnings:
            log(f"sparse/W=1 on {target.name}: FAILED ({len(warnings)} warnings, make exit {rc})")
            failed += 1
        else:
            log(f"sparse/W=1 on {target.name}: clean")
    return 1 if failed else 0


def check_config(tree: Path, enable_missing: bool = False) -> list[str]:
    """Report (and optionally enable) the Kconfig symbols WrapDrive needs in tree/.config."""
    import kconfig_check

    dotconfig = tree / ".config"
    kconf = kconfig_check.load(tree / "Kconfig", dotconfig)
    missing = kconfig_check.missing_symbols(kconf)
    if missing and enable_missing:
        still = kconfig_check.enable_missing(kconf)
        kconf.write_config(str(dotconfig))
        enabled = [s for s in missing if s not in still]
        if enabled:
            log(f"{dotconfig}: enabled " + " ".join(f"CONFIG_{s}" for s in enabled))
            log(f"now rebuild the kernel: make -C {tree} olddefconfig && make -C {tree} -j{os.cpu_count()}")
        missing = still
    if missing:
        log(f"{dotconfig}: missing " + " ".join(f"CONFIG_{s}" for s in missing))
    else:
        log(f"{dotconfig}: every required symbol is set")
    return missing


def run(
    target: Target,
    command: Sequence[str],
    *,
    timeout: float,
    load_modules: bool = True,
    kvm: bool | None = None,
    memory_mb: int = vm.DEFAULT_MEMORY_MB,
    cpus: int = vm.DEFAULT_CPUS,
    full_dmesg: bool = False,
    machine: machine_profiles.Machine = machine_profiles.DEFAULT,
) -> int:
    """Boot target, load the modules, run command, end the session; print the guest's
    kernel log; the command's status, or non-zero when the kernel splatted, the session's
    end found a leak, or the guest died (verdict.run_problems)."""
    if target.image is None:
        raise SystemExit(f"{target.source_tree}: no arch/x86/boot/bzImage; build the kernel first")
    mdir = target.build_dir if load_modules else None
    if mdir is not None and not all((mdir / m).exists() for m in MODULES):
        raise SystemExit(f"{mdir}: modules not built; run tools/build.py build --kernel {target.name}")
    if kvm is None:
        kvm = vm.use_kvm(target.image)
    guest = vm.Guest(target.name, target.image, mdir, kvm, cpus, memory_mb, machine)
    outdir = vm.new_outdir("run", target.name)
    res = vm.boot(guest, command, outdir, timeout=timeout, echo=print, log=log)
    ev = verdict.Evidence.load(outdir)
    if ev.kmsg is not None:
        shown = ev.kmsg.lines if full_dmesg else dmesg_since_command(ev.kmsg.lines)
        print(f"----- guest kernel log ({target.name}{'' if full_dmesg else ', since the command started'}) -----")
        print("\n".join(shown))
        print("----- end of guest kernel log -----")
    status = run_status(ev, guest.modules)
    log(f"{target.name}: command exited {ev.status if ev.status is not None else '(never finished)'}"
        f" after {res.elapsed:.1f}s wall; exit {status}; output folder {outdir}")  # fmt: skip
    return status


def run_status(ev: verdict.Evidence, ours: Sequence[str] = vm.OUR_MODULES) -> int:
    """`run`'s exit status: the command's, or 1 when it passed but the guest did not (a
    kernel splat after the modules loaded, a leak or rmmod failure at the end of the
    session, a kernel log that could not be read), 124 on a timeout.  ours: our modules
    the guest loaded, in load order."""
    expected = vm.STOCK_MODULES + tuple(ours)
    rmmod = tuple(reversed(ours))
    problems = verdict.run_problems(ev, expected, rmmod)
    for p in problems:
        log(f"ERROR: {p}")
    rc = ev.status if ev.status is not None else (124 if ev.boot.get("timed_out") else (ev.boot.get("returncode") or 1))
    if problems and rc == 0:
        log(f"FAILED: {len(problems)} problem(s) in the guest (above), although the command passed")
        return 1
    return rc


def dmesg_since_command(lines: list[str]) -> list[str]:
    """The kernel log from the moment our modules were loaded (boot noise dropped)."""
    for i, ln in enumerate(lines):
        if verdict.message(ln).startswith(guest_session.MARK_MODULES):
            return lines[i:]
    return lines


# --------------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/build.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("deps", help="add bookworm-backports and install the Debian packages (root)")
    d.add_argument("--print", action="store_true", help="only list the packages")

    k = sub.add_parser("kernels", help="fetch and unpack Debian's 6.1 and 6.12 into .cache/kernels")
    k.add_argument("--kernel", action="append", choices=KNOWN_KERNELS, help="only this one (repeatable)")
    k.add_argument(
        "--debug", nargs="?", const=debugkernel.DEFAULT_SOURCE, choices=sorted(debugkernel.SOURCES),
        help="build (or reuse) the debug kernel from Debian's linux-source (default 6.1) instead",
    )  # fmt: skip

    c = sub.add_parser("config", help="check a kernel source tree's .config for what WrapDrive needs")
    c.add_argument("tree", type=Path)
    c.add_argument("--enable-missing", action="store_true", help="enable them with kconfiglib and write .config")

    b = sub.add_parser("build", help="build wrapdrive.ko and wd_dummy.ko against a kernel")
    b.add_argument("--kernel", default="6.1", help="6.1, 6.12, debug or PATH to a kernel source tree (default 6.1)")
    b.add_argument("--enable-missing", action="store_true", help="PATH only: enable missing Kconfig symbols")
    b.add_argument("--werror", action="store_true", help="build from clean and fail on any W=1 warning")
    b.add_argument("--clean", action="store_true", help="build from clean (make clean first)")
    b.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)

    li = sub.add_parser("lint", help="checkpatch.pl --strict and sparse (C=2) on kernel/")
    li.add_argument("--kernel", action="append", help="kernel(s) whose headers sparse uses (default 6.1)")

    r = sub.add_parser("run", help="boot a kernel, load the modules, run CMD; exit with its status")
    r.add_argument("--kernel", default="6.1", help="6.1, 6.12, debug or PATH (default 6.1)")
    r.add_argument("--timeout", type=float, default=float(os.environ.get("WD_VM_TIMEOUT", vm.DEFAULT_BOOT_TIMEOUT)))
    r.add_argument("--no-modules", action="store_true", help="do not load wrapdrive.ko / wd_dummy.ko")
    r.add_argument("--build", action="store_true", help="build the modules first")
    r.add_argument("--full-dmesg", action="store_true", help="print the whole guest log, boot included")
    r.add_argument("--machine", default="default", choices=sorted(machine_profiles.MACHINES),
                   help="machine profile: extra devices, kernel arguments, modules (tools/machine.py)")
    r.add_argument("--memory", type=int, default=vm.DEFAULT_MEMORY_MB, help="MiB, split over 2 NUMA nodes")
    acc = r.add_mutually_exclusive_group()
    acc.add_argument("--kvm", dest="kvm", action="store_true", default=None, help="force KVM")
    acc.add_argument("--tcg", dest="kvm", action="store_false", help="force TCG (no KVM)")
    r.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...] (default: a shell check)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return _dispatch(args)
    except kernels.SetupError as e:
        print(f"tools/build.py {args.cmd}: {e}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "deps":
        if args.print:
            print(" ".join(kernels.APT_PACKAGES))
            return 0
        installed = kernels.ensure_apt_packages()
        log("installed: " + (" ".join(installed) if installed else "nothing (all present)"))
        return 0
    if args.cmd == "kernels":
        if args.debug:
            debug_target(f"{debugkernel.SPEC}-{args.debug}")
        for name in args.kernel or ([] if args.debug else KNOWN_KERNELS):
            kernels.prepare_kernel(name, log=log)
        return 0
    if args.cmd == "config":
        return 1 if check_config(args.tree, args.enable_missing) else 0
    if args.cmd == "build":
        target = resolve_target(args.kernel)
        if target.source_tree is not None:
            if check_config(target.source_tree, args.enable_missing):
                return 1
            if not (target.source_tree / "Module.symvers").exists():
                raise SystemExit(f"{target.source_tree}: not built (no Module.symvers); build the kernel first")
        build(target, jobs=args.jobs, werror=args.werror, clean=args.clean)
        return 0
    if args.cmd == "lint":
        return lint(args.kernel or ["6.1"])
    if args.cmd == "run":
        command = list(args.command)
        if command and command[0] == "--":
            command = command[1:]
        if not command:
            command = ["sh", "-c", "lsmod; ls /sys/class/mdev_bus"]
        target = resolve_target(args.kernel)
        if args.build and not args.no_modules:
            build(target)
        return run(
            target,
            command,
            timeout=args.timeout,
            load_modules=not args.no_modules,
            kvm=args.kvm,
            memory_mb=args.memory,
            full_dmesg=args.full_dmesg,
            machine=machine_profiles.get(args.machine),
        )
    raise AssertionError(args.cmd)


if __name__ == "__main__":
    sys.exit(main())
