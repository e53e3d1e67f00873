"""kernel/dkms.conf installs what kernel/Kbuild builds: a module added to
Kbuild and forgotten in dkms.conf would build with make and silently be
missing from every DKMS install.  Host only: `nox -s dkms` runs Debian's
dkms and boots guests."""

from __future__ import annotations

import re
from pathlib import Path

KERNEL = Path(__file__).resolve().parents[2] / "kernel"


def kbuild_modules() -> set[str]:
    """The modules `obj-m` names in kernel/Kbuild."""
    mods: set[str] = set()
    for line in (KERNEL / "Kbuild").read_text().splitlines():
        m = re.match(r"obj-m\s*[+:]?=\s*(.*)", line)
        if m:
            mods.update(o.removesuffix(".o") for o in m.group(1).split())
    return mods


def dkms_arrays() -> dict[str, dict[int, str]]:
    """dkms.conf's indexed settings: {"BUILT_MODULE_NAME": {0: "wrapdrive", ...}, ...}."""
    out: dict[str, dict[int, str]] = {}
    for line in (KERNEL / "dkms.conf").read_text().splitlines():
        m = re.match(r'([A-Z_]+)\[(\d+)\]="?([^"]*)"?$', line.strip())
        if m:
            out.setdefault(m.group(1), {})[int(m.group(2))] = m.group(3)
    return out


def test_kbuild_is_read() -> None:
    assert {"wrapdrive", "wd_dummy", "wd_edu"} <= kbuild_modules()


def test_dkms_conf_names_every_module_kbuild_builds() -> None:
    names = dkms_arrays()["BUILT_MODULE_NAME"]
    assert sorted(names) == list(range(len(names)))  # dkms walks 0..count-1: no gaps
    assert set(names.values()) == kbuild_modules()
    assert len(set(names.values())) == len(names)


def test_every_dkms_module_has_one_destination() -> None:
    arrays = dkms_arrays()
    dest = arrays["DEST_MODULE_LOCATION"]
    assert sorted(dest) == sorted(arrays["BUILT_MODULE_NAME"])
    assert set(dest.values()) == {"/updates/dkms"}
