"""Host packages and target kernels: what `build.py deps` and `build.py kernels` do.

Everything here uses only the standard library, so the bootstrap can run it with the
system's python3 before the project's venv exists.  The functions that decide *what*
to do (package names, deb822 parsing, version picking, paths) are pure and tested in
tests/host/test_build_tool.py; the ones that *do* it take a `runner` so tests can
replace apt and dpkg.

The kernels are shared by every clone of the user, like the debs they come from:
  ~/.cache/wrapdrive/debs/<file>.deb        each checked against the package index (size,
                                            SHA256 of the exact version) before use;
                                            downloaded into a temporary folder, renamed in
  ~/.cache/wrapdrive/kernels/<release>/     unpacked into a temporary folder, headers fixed,
                                            depmod run, then renamed: a half-unpacked
                                            kernel is never under this name
  .cache/kernels/<6.1|6.12>                 a symlink to the shared kernel
Every external command runs with a time limit (TIMEOUTS).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"
KERNEL_CACHE = CACHE / "kernels"
# Shared by every clone of the user (CI runs in a fresh clone).
SHARED = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wrapdrive"
SHARED_DEBS = SHARED / "debs"
SHARED_KERNELS = SHARED / "kernels"
COMPLETE_STAMP = ".wd-complete"

# Seconds each external command may take (generous: the machine may be loaded).
TIMEOUTS: dict[str, float] = {
    "apt-get update": 900,
    "apt-get install": 3600,
    "apt-get download": 1800,
    "apt-cache": 120,
    "dpkg-query": 120,
    "dpkg": 600,
    "depmod": 300,
}
DEFAULT_TIMEOUT = 600.0

# Debian packages the build, lint and VM paths need on the host.
APT_PACKAGES: tuple[str, ...] = (
    "qemu-system-x86",  # guests
    "busybox-static",  # virtme-ng's initramfs
    "kmod",  # modprobe/insmod/depmod (host depmod for unpacked kernels too)
    "cpio",
    "sparse",  # lint: make C=2
    "dwarves",  # pahole: BTF for modules against 6.12 headers
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "make",
    "gcc-12",  # both Debian kernels are built with gcc-12
    "libc6-dev",
    "perl",  # checkpatch.pl
    "xz-utils",
    "strace",
    "mdevctl",  # provisioned queues (tests/qemu/guest/test_userlib_nonroot.py)
    "dkms",  # nox -s dkms (tests/dkms): the packagers' build of the modules
    "linux-source-6.1",  # checkpatch.pl, spelling.txt, const_structs.checkpatch
    "python3-venv",
    "python3-dev",  # the userlib's C extension builds against Debian's python3
    "ca-certificates",
)

SOURCES_DIR = Path("/etc/apt/sources.list.d")
BACKPORTS_FILE = SOURCES_DIR / "wrapdrive-backports.sources"


class SetupError(RuntimeError):
    """A step cannot go on; the message says what is missing and what to run."""


Runner = Callable[[Sequence[str]], str]


def timeout_for(cmd: Sequence[str]) -> float:
    """The time limit of an external command (TIMEOUTS by its first one or two words)."""
    return TIMEOUTS.get(" ".join(cmd[:2]), TIMEOUTS.get(Path(cmd[0]).name, DEFAULT_TIMEOUT))


def run_limited(
    cmd: Sequence[str],
    timeout: float,
    *,
    capture: bool = True,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """Run cmd in its own process group; past timeout the whole group (make's compilers,
    apt's methods) is killed and SetupError says so.  (returncode, stdout, stderr); the
    output is shown instead of captured with capture=False."""
    pipe = subprocess.PIPE if capture else None
    try:
        proc = subprocess.Popen(list(cmd), stdout=pipe, stderr=pipe, stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                text=True, errors="replace", start_new_session=True)  # fmt: skip
    except OSError as e:
        raise SetupError(f"`{' '.join(cmd)}` cannot run: {e.strerror}") from e
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        kill_group(proc)
        raise SetupError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f}s: killed") from e
    except BaseException:
        kill_group(proc)
        raise
    return proc.returncode, out or "", err or ""


def kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_capture(cmd: Sequence[str]) -> str:
    """Default runner: run cmd with its time limit, return stdout; SetupError (with its
    stderr) when it fails or runs too long."""
    rc, out, err = run_limited(cmd, timeout_for(cmd))
    if rc != 0:
        raise SetupError(f"`{' '.join(cmd)}` failed ({rc}): {err.strip()}")
    return out


def run_shown(cmd: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run cmd with its output shown and its time limit; one-line SetupError on failure
    (its own messages are above it)."""
    rc, _, _ = run_limited(cmd, timeout_for(cmd), capture=False, cwd=cwd, env=env)
    if rc != 0:
        raise SetupError(f"`{' '.join(cmd)}` failed (exit {rc}); its messages are above")


def is_root() -> bool:
    return os.geteuid() == 0


# --------------------------------------------------------------------------- apt sources


def parse_deb822(text: str) -> list[dict[str, str]]:
    """Parse deb822 stanzas (sources files); comments dropped, continuation lines joined."""
    stanzas: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    key = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("#"):
            continue
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, key = {}, ""
            continue
        if line[0] in " \t" and key:
            cur[key] = (cur[key] + " " + line.strip()).strip()
            continue
        if ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            cur[key] = value.strip()
    if cur:
        stanzas.append(cur)
    return stanzas


def backports_stanza(sources_text: str, release: str = "bookworm") -> str | None:
    """A deb822 stanza for <release>-backports copied from the stanza that serves <release>.

    The archive's address is taken from the machine's own sources, never written here.
    """
    for st in parse_deb822(sources_text):
        if release in st.get("Suites", "").split() and st.get("URIs"):
            lines = [
                "Types: deb",
                f"URIs: {st['URIs']}",
                f"Suites: {release}-backports",
                f"Components: {st.get('Components', 'main')}",
            ]
            if "Signed-By" in st:
                lines.append(f"Signed-By: {st['Signed-By']}")
            return "\n".join(lines) + "\n"
    return None


def has_suite(sources_texts: Sequence[str], suite: str) -> bool:
    """True when any deb822 stanza or one-line `deb` entry already lists suite."""
    for text in sources_texts:
        for st in parse_deb822(text):
            if suite in st.get("Suites", "").split() and st.get("Enabled", "yes") != "no":
                return True
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and suite in parts:
                return True
    return False


def read_apt_sources(root: Path = Path("/etc/apt")) -> dict[Path, str]:
    out: dict[Path, str] = {}
    files = [root / "sources.list"] + sorted((root / "sources.list.d").glob("*"))
    for f in files:
        if f.is_file() and f.suffix in (".list", ".sources"):
            out[f] = f.read_text(errors="replace")
    return out


def ensure_backports(sources: dict[Path, str] | None = None) -> bool:
    """Add bookworm-backports (same archive as bookworm) unless present. True if added."""
    sources = read_apt_sources() if sources is None else sources
    if has_suite(list(sources.values()), "bookworm-backports"):
        return False
    stanza = None
    for text in sources.values():
        stanza = backports_stanza(text)
        if stanza:
            break
    if stanza is None:
        raise SetupError("no apt source serves 'bookworm': cannot derive bookworm-backports")
    if not is_root():
        raise SetupError(
            "bookworm-backports is not in the apt sources and adding it needs root:\n  sudo python3 tools/build.py deps"
        )
    BACKPORTS_FILE.write_text(stanza)
    return True


def missing_packages(packages: Sequence[str], runner: Runner = run_capture) -> list[str]:
    """Packages of `packages` that dpkg does not report as installed."""
    try:
        out = runner(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *packages])
    except SetupError as e:
        # dpkg-query exits 1 when some names are unknown; its stdout is lost, so ask one by one.
        if len(packages) == 1:
            return list(packages)
        del e
        return [p for p in packages if missing_packages([p], runner)]
    installed = {ln.split()[0] for ln in out.splitlines() if ln.endswith(" installed")}
    return [p for p in packages if p not in installed]


def apt_install_cmd(packages: Sequence[str]) -> list[str]:
    return ["apt-get", "install", "-y", "--no-install-recommends", *packages]


def ensure_apt_packages(packages: Sequence[str] = APT_PACKAGES) -> list[str]:
    """Install what is missing (root only). Returns the packages installed."""
    added = ensure_backports()
    missing = missing_packages(packages)
    if not missing and not added:
        return []
    if not is_root():
        raise SetupError(
            "missing Debian packages: " + " ".join(missing) + "\nrun as root: sudo python3 tools/build.py deps"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run_shown(["apt-get", "update", "-q"], env=env)
    if missing:
        run_shown(apt_install_cmd(missing), env=env)
    return missing


# --------------------------------------------------------------------------- kernel packages


@dataclass(frozen=True)
class KernelPackages:
    name: str  # "6.1" / "6.12": the cache folder
    release: str  # uname -r, e.g. 6.1.0-56-amd64
    packages: tuple[str, ...]


def field(control: str, name: str) -> str:
    """First `name:` field of apt-cache show output (the candidate comes first)."""
    for st in parse_deb822(control):
        if name in st:
            return st[name]
    return ""


def release_of(image_pkg: str) -> str:
    """linux-image-6.1.0-56-amd64 -> 6.1.0-56-amd64; the -unsigned suffix dropped."""
    rel = image_pkg.removeprefix("linux-image-")
    return rel.removesuffix("-unsigned")


def header_support_packages(headers_depends: Sequence[str]) -> list[str]:
    """From linux-headers-<rel>-amd64's Depends: its -common headers and its kbuild."""
    return [
        n
        for n in headers_depends
        if (n.startswith("linux-headers-") and n.endswith("-common")) or n.startswith("linux-kbuild-")
    ]


_V612 = re.compile(r"^linux-image-(6\.12\.(\d+)\+deb12)-amd64-unsigned$")


def newest_612_image(pkgnames: Sequence[str]) -> str | None:
    """The newest linux-image-6.12.N+deb12-amd64-unsigned among pkgnames."""
    best: tuple[int, str] | None = None
    for n in pkgnames:
        m = _V612.match(n.strip())
        if m and (best is None or int(m.group(2)) > best[0]):
            best = (int(m.group(2)), n.strip())
    return best[1] if best else None


def apt_depends(text: str) -> list[str]:
    """Package names on the Depends lines of `apt-cache depends` (the candidate version)."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^\s*\|?Depends:\s*<?([a-z0-9][a-z0-9+.\-]+)>?", line)
        if m:
            out.append(m.group(1))
    return out


def resolve_kernel(name: str, runner: Runner = run_capture) -> KernelPackages:
    """Package set for kernel `name` ("6.1" or "6.12") from the apt lists."""
    if name == "6.1":
        deps = apt_depends(runner(["apt-cache", "depends", "linux-image-amd64"]))
        image = [n for n in deps if n.startswith("linux-image-6.1.")]
        if not image:
            raise SetupError("the candidate linux-image-amd64 does not depend on a 6.1 image")
        image_pkg = image[0]
    elif name == "6.12":
        found = newest_612_image(runner(["apt-cache", "pkgnames", "linux-image-6.12."]).split())
        if not found:
            raise SetupError(
                "no linux-image-6.12.*+deb12-amd64-unsigned in the apt lists "
                "(bookworm-backports/bookworm-security); run `sudo python3 tools/build.py deps`"
            )
        image_pkg = found
    else:
        raise SetupError(f"unknown kernel {name!r}: 6.1 or 6.12")
    release = release_of(image_pkg)
    headers = f"linux-headers-{release}"
    support = header_support_packages(apt_depends(runner(["apt-cache", "depends", headers])))
    return KernelPackages(name, release, (image_pkg, headers, *support))


# --------------------------------------------------------------------------- debs, checked


@dataclass(frozen=True)
class Deb:
    """A package's record in the apt index: the exact file to use and how to check it."""

    package: str
    version: str
    filename: str  # the .deb's name (basename of the index's Filename)
    size: int
    sha256: str


def index_entry(package: str, runner: Runner = run_capture) -> Deb:
    """The candidate version's index record (apt-cache show of exactly that version)."""
    text = runner(["apt-cache", "show", "--no-all-versions", package])
    version, fname, size, sha = (field(text, k) for k in ("Version", "Filename", "Size", "SHA256"))
    if not (version and fname and size.isdigit() and len(sha) == 64):
        raise SetupError(f"{package}: the apt index has no usable record (Version/Filename/Size/SHA256)")
    return Deb(package, version, Path(fname).name, int(size), sha.lower())


def deb_problem(path: Path, deb: Deb) -> str:
    """'' when path is the file the index describes, else what is wrong with it."""
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"{path.name}: {e.strerror}"
    if size != deb.size:
        return f"{path.name}: {size} bytes, the index says {deb.size}"
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != deb.sha256:
        return f"{path.name}: SHA256 {h.hexdigest()}, the index says {deb.sha256}"
    return ""


def download_cmd(debs: Sequence[Deb]) -> list[str]:
    return ["apt-get", "download", *(f"{d.package}={d.version}" for d in debs)]


Download = Callable[[list[str], Path], object]


def fetch_debs(
    debs: Sequence[Deb],
    shared: Path,
    log: Callable[[str], None],
    download: Download | None = None,
) -> dict[str, Path]:
    """Each deb, checked, in `shared`: one already there is used when its size and SHA256
    match the index (else deleted); the rest are downloaded into a temporary folder,
    checked, and renamed into place (a file under its final name is always whole)."""
    shared.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    missing: list[Deb] = []
    for d in debs:
        path = shared / d.filename
        if path.exists():
            bad = deb_problem(path, d)
            if not bad:
                out[d.package] = path
                continue
            log(f"dropping a damaged cached deb: {bad}")
            path.unlink()
        missing.append(d)
    if not missing:
        return out
    log(f"downloading {' '.join(d.filename for d in missing)}")
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=shared))
    try:
        fetch = download or (lambda cmd, cwd: run_shown(cmd, cwd=cwd))
        try:
            fetch(download_cmd(missing), tmp)
        except SetupError as e:
            hint = "" if is_root() else " (as root, `sudo python3 tools/build.py deps` first)"
            raise SetupError(f"cannot download {' '.join(d.package for d in missing)}: {e}{hint}") from e
        for d in missing:
            got = tmp / d.filename
            bad = deb_problem(got, d)
            if bad:
                raise SetupError(f"downloaded {bad}")
            os.replace(got, shared / d.filename)
            out[d.package] = shared / d.filename
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- unpacked layout


@dataclass(frozen=True)
class Kernel:
    """A kernel unpacked into the cache: image, modules tree, headers (KDIR)."""

    name: str
    root: Path

    @property
    def release(self) -> str:
        mods = sorted(p.name for p in (self.root / "lib/modules").glob("*") if p.is_dir())
        if not mods:
            raise SetupError(f"{self.root}: no lib/modules/<release>")
        return mods[-1]

    @property
    def image(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def kdir(self) -> Path:
        return self.root / "usr/src" / f"linux-headers-{self.release}"

    @property
    def config(self) -> Path:
        return self.root / "boot" / f"config-{self.release}"


def kernel(name: str, cache: Path = KERNEL_CACHE) -> Kernel:
    return Kernel(name, cache / name)


def is_complete(k: Kernel) -> bool:
    """Unpacked to the end: only a finished unpack carries the stamp (written last, before
    the rename that gives the folder its name)."""
    try:
        return (
            (k.root / COMPLETE_STAMP).is_file()
            and k.image.is_file()
            and (k.kdir / "Makefile").is_file()
            and (k.kdir / ".config").is_file()
        )
    except SetupError:
        return False


_INCLUDE = re.compile(r"^include\s+(\S*/usr/src/(linux-headers-[^/\s]+)/Makefile)\s*$")


def fixed_makefile(text: str, root: Path) -> str:
    """Rewrite the arch headers' `include /usr/src/...common/Makefile` to point into root."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        m = _INCLUDE.match(line.rstrip("\n"))
        if m:
            lines[i] = f"include {root}/usr/src/{m.group(2)}/Makefile\n"
            break
    return "".join(lines)


def fix_headers(k: Kernel, root: Path | None = None) -> bool:
    """Point the headers' Makefile at `root` (where the tree will live; default: k.root)."""
    mk = k.kdir / "Makefile"
    old = mk.read_text()
    new = fixed_makefile(old, (root or k.root).resolve())
    if new != old:
        mk.write_text(new)
        return True
    return False


def unpack_cmd(deb: Path, dest: Path) -> list[str]:
    return ["dpkg", "-x", str(deb), str(dest)]


def unpack(
    name: str, release: str, debs: dict[str, Path], shared: Path, runner: Runner, log: Callable[[str], None]
) -> Path:
    """Unpack debs into a temporary folder, fix the headers, run depmod (virtme-ng would
    otherwise write modules.dep into the shared tree at boot), stamp it, then rename it to
    shared/<release>.  Another process that finished first wins; this copy is dropped."""
    shared.mkdir(parents=True, exist_ok=True)
    final = shared / release
    for stale in shared.glob(f".unpack-{release}-*"):
        pid = stale.name.split("-")[-2] if stale.name.count("-") >= 3 else ""
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".unpack-{release}-{os.getpid()}-", dir=shared))
    try:
        for deb in debs.values():
            log(f"{name}: unpacking {deb.name}")
            runner(unpack_cmd(deb, tmp))
        k = Kernel(name, tmp)
        fix_headers(k, final)
        runner(["depmod", "-a", "-b", str(tmp), k.release])
        (tmp / COMPLETE_STAMP).write_text("".join(f"{p.name}\n" for p in debs.values()))
        try:
            tmp.rename(final)
        except OSError:
            if not is_complete(Kernel(name, final)):
                raise
            log(f"{name}: another process unpacked {release} first; using it")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def link(cache: Path, name: str, target: Path) -> Kernel:
    """cache/<name> -> target (a symlink, replaced atomically)."""
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / name
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)  # an unpack of an older harness, private to this clone
    tmp = cache / f".{name}.link-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, dest)
    return Kernel(name, dest)


def prepare_kernel(
    name: str,
    cache: Path = KERNEL_CACHE,
    runner: Runner = run_capture,
    log: Callable[[str], None] = print,
    shared: Path | None = SHARED,
    download: Download | None = None,
) -> Kernel:
    """Make cache/<name> a complete kernel: reuse it; else link the shared unpacked
    kernel of the release the apt index names; else fetch (checked) and unpack it."""
    k = kernel(name, cache)
    if is_complete(k):
        log(f"{name}: present ({k.release}), reused")
        return k
    shared = shared if shared is not None else cache / "shared"
    try:
        pkgs = resolve_kernel(name, runner)
    except SetupError:
        if not is_root():
            raise
        log(f"{name}: not in the apt lists; apt-get update")
        runner(["apt-get", "update", "-q"])
        pkgs = resolve_kernel(name, runner)
    unpacked = shared / "kernels" / pkgs.release
    if not is_complete(Kernel(name, unpacked)):
        if unpacked.exists():
            log(f"{name}: {unpacked} is incomplete; unpacking again")
            shutil.rmtree(unpacked)
        debs = fetch_debs([index_entry(p, runner) for p in pkgs.packages], shared / "debs", log, download)
        unpacked = unpack(name, pkgs.release, debs, shared / "kernels", runner, log)
    k = link(cache, name, unpacked)
    if not is_complete(k):
        raise SetupError(f"{name}: {k.root} is incomplete after unpacking {pkgs.packages}")
    log(f"{name}: ready ({k.release}, {unpacked})")
    return k
