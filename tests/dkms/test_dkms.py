"""DKMS as a packager uses it (`nox -s dkms`): Debian's dkms adds, builds and
installs wrapdrive.ko, wd_dummy.ko and wd_edu.ko from kernel/dkms.conf for the cached
6.1 and 6.12 kernels, then a guest of each kernel loads the DKMS-built
modules the way kernel/modules-load.d/wrapdrive.conf says and runs a request.

Nothing touches the host's /lib/modules, /usr/src or /var/lib/dkms: dkms runs
with its source, build and install trees under .cache/dkms/<kernel>/
(--sourcetree, --dkmstree, --installtree, --no-depmod), and the module tree
the guest loads from is made there with `depmod -b`.  One boot per kernel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import kernels  # noqa: E402

KERNEL = REPO / "kernel"
CACHE = REPO / ".cache" / "dkms"
CONF = KERNEL / "modules-load.d" / "wrapdrive.conf"
#: what dkms gets of kernel/: the build rules and the sources (as `make dkms-install`)
SOURCES = ("Kbuild", "Makefile", "dkms.conf", "include", "uapi")
#: every module kernel/Kbuild builds (tests/host/test_kernel_packaging.py checks
#: that dkms.conf names each)
MODULES = ["wd_dummy.ko", "wd_edu.ko", "wrapdrive.ko"]
BUILD_TIMEOUT = 900
BOOT_TIMEOUT = 900

pytestmark = pytest.mark.skipif(shutil.which("dkms") is None,
                                reason="Debian's dkms is not installed (apt-get install dkms)")


def version() -> str:
    for line in (KERNEL / "dkms.conf").read_text().splitlines():
        if line.startswith("PACKAGE_VERSION="):
            return line.split("=", 1)[1].strip('"')
    raise AssertionError("dkms.conf has no PACKAGE_VERSION")


def run(cmd: list[str], timeout: float = BUILD_TIMEOUT) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_dkms_version_follows_the_userlib() -> None:
    import tomllib
    project = tomllib.loads((REPO / "userlib/pyproject.toml").read_text())["project"]
    assert version() == project["version"]


@pytest.mark.parametrize("name", ["6.1", "6.12"])
def test_dkms_builds_installs_and_a_guest_loads_it(name: str) -> None:
    k = kernels.kernel(name)
    if not kernels.is_complete(k):
        pytest.skip(f"kernel {name} not unpacked (tools/build.py kernels)")
    kver, ver = k.release, version()
    work = CACHE / name
    shutil.rmtree(work, ignore_errors=True)
    src = work / "src" / f"wrapdrive-{ver}"
    src.mkdir(parents=True)
    for f in [*SOURCES, *(p.name for p in KERNEL.glob("*.[ch]"))]:
        p = KERNEL / f
        (shutil.copytree if p.is_dir() else shutil.copy2)(p, src / f)
    base = work / "modroot"
    kmods = base / "lib/modules" / kver
    kmods.mkdir(parents=True)
    (work / "tree").mkdir()
    trees = ["--sourcetree", str(work / "src"), "--dkmstree", str(work / "tree")]
    run(["dkms", "add", "-m", "wrapdrive", "-v", ver, *trees])
    out = run(["dkms", "install", "-m", "wrapdrive", "-v", ver, "-k", kver,
               "--kernelsourcedir", str(k.kdir), *trees, "--installtree", str(base / "lib/modules"),
               "--no-depmod"])
    assert "Installing to" in out, out
    built = sorted(p.name for p in (kmods / "updates/dkms").iterdir())
    assert built == MODULES, built
    status = run(["dkms", "status", "-m", "wrapdrive", *trees])
    assert f"wrapdrive/{ver}, {kver}, x86_64: installed" in status, status
    # the guest's module tree: the kernel's own modules beside DKMS's, depmod'ed
    real = k.root / "lib/modules" / kver
    os.symlink(real / "kernel", kmods / "kernel")
    for f in real.glob("modules.builtin*"):
        shutil.copy2(f, kmods / f.name)
    shutil.copy2(real / "modules.order", kmods / "modules.order")
    run(["depmod", "-b", str(base), kver])
    deps = (kmods / "modules.dep").read_text()
    assert "updates/dkms/wd_dummy.ko: updates/dkms/wrapdrive.ko" in deps, deps[:500]
    edu = [line for line in deps.splitlines() if line.startswith("updates/dkms/wd_edu.ko:")]
    assert edu and "updates/dkms/wrapdrive.ko" in edu[0], deps[:500]

    cmd = [sys.executable, str(REPO / "tools/build.py"), "run", "--kernel", name, "--no-modules",
           "--", "sh", str(REPO / "tests/dkms/guest_load.sh"), str(base), str(CONF)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=BOOT_TIMEOUT + 120,
                       env=dict(os.environ, WD_VM_TIMEOUT=str(BOOT_TIMEOUT)))
    print(r.stdout[-4000:])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "DKMS-OK" in r.stdout
    assert "loaded wd_dummy from DKMS" in r.stdout


def test_make_modules_install_into_a_destdir(tmp_path: Path) -> None:
    """kernel/Makefile's modules_install, as a distribution package build runs it."""
    k = kernels.kernel("6.1")
    if not kernels.is_complete(k):
        pytest.skip("kernel 6.1 not unpacked (tools/build.py kernels)")
    src = tmp_path / "src"
    src.mkdir()
    for f in [*SOURCES, *(p.name for p in KERNEL.glob("*.[ch]"))]:
        p = KERNEL / f
        (shutil.copytree if p.is_dir() else shutil.copy2)(p, src / f)
    dest = tmp_path / "dest"
    run(["make", "-C", str(src), f"KDIR={k.kdir}", "-j2", "modules"])
    run(["make", "-C", str(src), f"KDIR={k.kdir}", f"INSTALL_MOD_PATH={dest}", "modules_install"])
    extra = dest / "lib/modules" / k.release / "extra"
    assert sorted(p.name for p in extra.iterdir()) == MODULES
