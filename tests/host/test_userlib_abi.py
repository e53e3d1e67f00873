"""The ABI comes from kernel/uapi/wrapdrive.h compiled, never from a hand copy.

The cffi modules (wrapdrive._abi: the header alone; wrapdrive._native: the
header and libwd) are built from the header at install time.  These tests
check that the generated declarations left nothing out: every object-like
WD_* constant and every field of every struct wd_* of the header is in both
modules, with the value and offset an independent gcc program prints."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from wrapdrive import _abi, _native, abi

REPO = Path(__file__).resolve().parents[2]
HEADER = REPO / "kernel" / "uapi" / "wrapdrive.h"
LIBWD = REPO / "userlib" / "libwd"
MODULES = {"_abi": _abi, "_native": _native}

STRUCT = re.compile(r"^struct\s+(wd_\w+)\s*\{(.*?)^\};", re.M | re.S)
FIELD = re.compile(r"^\s*__[us]\d+\s+(\w+)(?:\[[^\]]*\])?\s*;", re.M)


def constants() -> list[str]:
    names = re.findall(r"^#define\s+(WD_[A-Z0-9_]+)[ \t]", HEADER.read_text(), re.M)
    assert len(names) >= 40, "header parse found too few WD_ constants"
    return names


def fields() -> dict[str, list[str]]:
    out = {s: [f for f in FIELD.findall(body) if not f.startswith("__")]
           for s, body in STRUCT.findall(HEADER.read_text())}
    assert {"wd_desc", "wd_cqe", "wd_ring_hdr", "wd_doorbell", "wd_sha256_ctx"} <= set(out)
    return out


@pytest.fixture(scope="module")
def c_values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is required")
    lines = ["#include <stdio.h>", "#include <stddef.h>", f'#include "{HEADER}"',
             "int main(void) {"]

    def emit(key: str, expr: str) -> None:
        lines.append(f'  printf("%s %llu\\n", "{key}", (unsigned long long)({expr}));')

    for name in constants():
        emit(name, name)
    for s, fs in fields().items():
        emit(f"sizeof:{s}", f"sizeof(struct {s})")
        for f in fs:
            emit(f"offsetof:{s}.{f}", f"offsetof(struct {s}, {f})")
    lines += ["  return 0;", "}"]
    d = tmp_path_factory.mktemp("abi")
    (d / "abi.c").write_text("\n".join(lines) + "\n")
    subprocess.run([gcc, "-Wall", "-Werror", "-o", str(d / "abi"), str(d / "abi.c")], check=True)
    out = subprocess.run([str(d / "abi")], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (ln.split() for ln in out.splitlines())}


@pytest.mark.parametrize("mod", MODULES)
def test_every_constant_is_compiled_in(mod: str, c_values: dict[str, int]) -> None:
    lib: Any = MODULES[mod].lib
    bad = {n: (getattr(lib, n, None), c_values[n]) for n in constants()
           if getattr(lib, n, None) != c_values[n]}
    assert not bad, f"{mod} vs the header (module, C): {bad}"


@pytest.mark.parametrize("mod", MODULES)
def test_every_struct_field_is_laid_out_by_the_compiler(mod: str,
                                                        c_values: dict[str, int]) -> None:
    ffi: Any = MODULES[mod].ffi
    bad = {}
    for s, fs in fields().items():
        if ffi.sizeof(f"struct {s}") != c_values[f"sizeof:{s}"]:
            bad[s] = (ffi.sizeof(f"struct {s}"), c_values[f"sizeof:{s}"])
        for f in fs:
            if ffi.offsetof(f"struct {s}", f) != c_values[f"offsetof:{s}.{f}"]:
                bad[f"{s}.{f}"] = (ffi.offsetof(f"struct {s}", f), c_values[f"offsetof:{s}.{f}"])
    assert not bad, f"{mod} layout vs the header (module, C): {bad}"


def test_sizes_the_header_asserts() -> None:
    ffi: Any = _abi.ffi
    assert ffi.sizeof("struct wd_desc") == 64 and ffi.sizeof("struct wd_cqe") == 16
    assert ffi.offsetof("struct wd_ring_hdr", "cq_tail") == 0x80
    assert ffi.offsetof("struct wd_doorbell", "irq_request") == 0x80


def test_python_names_are_the_compiled_values() -> None:
    lib: Any = _native.lib
    for name in dir(abi):
        if name.startswith("WD_"):
            assert getattr(abi, name) == getattr(lib, name), name
    assert abi.deflate_bound(65536) == 65536 + 16 + 4 + 0 + 13
    assert abi.STATUS_NAMES[abi.WD_STS_BAD_CHAIN] == "WD_STS_BAD_CHAIN"


def test_libwd_reaches_the_header_through_a_symlink() -> None:
    link = LIBWD / "uapi" / "wrapdrive.h"
    assert link.is_symlink(), "userlib/libwd/uapi/wrapdrive.h must be a link, never a copy"
    assert link.resolve() == HEADER.resolve()


def test_no_hand_mirror_left() -> None:
    src = REPO / "userlib" / "src" / "wrapdrive"
    assert not (src / "uapi.py").exists() and not (src / "ring.py").exists()
    for py in src.glob("*.py"):
        text = py.read_text()
        assert "struct.Struct(" not in text and "ctypes.Structure" not in text, py.name
