"""Host packages and target kernels: what `build.py deps` and `build.py kernels` do.

Everything here uses only the standard library, so the bootstrap can run it with the
system's python3 before the project's venv exists.  The functions that decide *what*
to do (package names, deb822 parsing, version picking, paths) are pure and tested in
tests/host/test_build_kernels.py; the ones that *do* it take a `runner` so tests can
replace apt and dpkg.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"
KERNEL_CACHE = CACHE / "kernels"
DEB_CACHE = KERNEL_CACHE / "debs"
# Shared by every clone of the user (CI runs in a fresh clone): debs found here are copied
# instead of downloaded again, and downloads are copied here.
SHARED_DEBS = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wrapdrive" / "debs"

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
    "mdevctl",
    "linux-source-6.1",  # checkpatch.pl, spelling.txt, const_structs.checkpatch
    "python3-venv",
    "ca-certificates",
)

SOURCES_DIR = Path("/etc/apt/sources.list.d")
BACKPORTS_FILE = SOURCES_DIR / "wrapdrive-backports.sources"


class SetupError(RuntimeError):
    """A step cannot go on; the message says what is missing and what to run."""


Runner = Callable[[Sequence[str]], str]


def run_capture(cmd: Sequence[str]) -> str:
    """Default runner: run cmd, return stdout, raise SetupError with stderr on failure."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SetupError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stderr.strip()}")
    return proc.stdout


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
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    if missing:
        subprocess.run(apt_install_cmd(missing), check=True, env=env)
    return missing


# --------------------------------------------------------------------------- kernel packages


@dataclass(frozen=True)
class KernelPackages:
    name: str  # "6.1" / "6.12": the cache folder
    release: str  # uname -r, e.g. 6.1.0-56-amd64
    packages: tuple[str, ...]


_PKG_IN_DEPENDS = re.compile(r"^\s*([a-z0-9][a-z0-9+.\-]+)")


def depends_names(depends: str) -> list[str]:
    """Package names of a Depends field, first alternative of each item."""
    names = []
    for item in depends.split(","):
        first = item.split("|")[0]
        m = _PKG_IN_DEPENDS.match(first)
        if m:
            names.append(m.group(1))
    return names


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
    try:
        return k.image.is_file() and (k.kdir / "Makefile").is_file() and (k.kdir / ".config").is_file()
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


def fix_headers(k: Kernel) -> bool:
    mk = k.kdir / "Makefile"
    old = mk.read_text()
    new = fixed_makefile(old, k.root.resolve())
    if new != old:
        mk.write_text(new)
        return True
    return False


def deb_files(pkgs: KernelPackages, debs: Path) -> dict[str, Path | None]:
    """Each package and the .deb already in debs for it (None when not downloaded)."""
    out: dict[str, Path | None] = {}
    for p in pkgs.packages:
        hits = sorted(debs.glob(f"{p}_*.deb"))
        out[p] = hits[-1] if hits else None
    return out


def download_cmd(packages: Sequence[str]) -> list[str]:
    return ["apt-get", "download", *packages]


def unpack_cmd(deb: Path, dest: Path) -> list[str]:
    return ["dpkg", "-x", str(deb), str(dest)]


def prepare_kernel(
    name: str,
    cache: Path = KERNEL_CACHE,
    runner: Runner = run_capture,
    log: Callable[[str], None] = print,
    shared: Path | None = SHARED_DEBS,
    download: Callable[[list[str], Path], object] | None = None,
) -> Kernel:
    """Make cache/<name> a complete kernel: reuse it if complete, else fetch and unpack."""
    k = kernel(name, cache)
    if is_complete(k):
        if fix_headers(k):
            log(f"{name}: headers Makefile re-pointed into {k.root}")
        log(f"{name}: present ({k.release}), reused")
        return k
    try:
        pkgs = resolve_kernel(name, runner)
    except SetupError:
        if not is_root():
            raise
        log(f"{name}: not in the apt lists; apt-get update")
        runner(["apt-get", "update", "-q"])
        pkgs = resolve_kernel(name, runner)
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    have = deb_files(pkgs, debs)
    for p, f in have.items():
        if f is None and shared is not None:
            hit = deb_files(KernelPackages(name, pkgs.release, (p,)), shared)[p]
            if hit is not None:
                shutil.copy2(hit, debs / hit.name)
                log(f"{name}: {hit.name} taken from {shared}")
    have = deb_files(pkgs, debs)
    missing = [p for p, f in have.items() if f is None]
    if missing:
        log(f"{name}: downloading {' '.join(missing)}")
        fetch = download or (lambda cmd, cwd: subprocess.run(cmd, cwd=cwd, check=True))
        try:
            fetch(download_cmd(missing), debs)
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            hint = "" if is_root() else " (as root, `sudo python3 tools/build.py deps` first)"
            raise SetupError(f"{name}: cannot download {' '.join(missing)}: {e}{hint}") from e
        have = deb_files(pkgs, debs)
        if shared is not None:
            try:
                shared.mkdir(parents=True, exist_ok=True)
                for p in missing:
                    f = have[p]
                    if f is not None:
                        shutil.copy2(f, shared / f.name)
            except OSError as e:
                log(f"{name}: could not keep a copy in {shared}: {e}")
    k.root.mkdir(parents=True, exist_ok=True)
    for p, deb in have.items():
        if deb is None:
            raise SetupError(f"{name}: {p} was not downloaded")
        log(f"{name}: unpacking {deb.name}")
        runner(unpack_cmd(deb, k.root))
    fix_headers(k)
    if not is_complete(k):
        raise SetupError(f"{name}: {k.root} is incomplete after unpacking {pkgs.packages}")
    log(f"{name}: ready ({k.release})")
    return k
