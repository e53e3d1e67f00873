"""userlib/src/wrapdrive/uapi.py must mirror kernel/uapi/wrapdrive.h and linux/vfio.h.

A C program compiled with gcc against the real headers prints every constant,
sizeof and offsetof; any difference from the Python module fails."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from wrapdrive import uapi

REPO = Path(__file__).resolve().parents[2]
HEADER = REPO / "kernel" / "uapi" / "wrapdrive.h"

WD_STRUCTS = {
    "wd_desc": uapi.WdDesc,
    "wd_cqe": uapi.WdCqe,
    "wd_sha256_ctx": uapi.WdSha256Ctx,
    "wd_doorbell": uapi.WdDoorbell,
    "wd_ring_hdr": uapi.WdRingHdr,
}
VFIO_STRUCTS = {
    "vfio_group_status": uapi.VfioGroupStatus,
    "vfio_region_info": uapi.VfioRegionInfo,
    "vfio_irq_info": uapi.VfioIrqInfo,
    "vfio_irq_set": uapi.VfioIrqSet,
    "vfio_iommu_type1_dma_map": uapi.VfioIommuType1DmaMap,
    "vfio_iommu_type1_dma_unmap": uapi.VfioIommuType1DmaUnmap,
}
VFIO_CONSTANTS = [
    "VFIO_API_VERSION", "VFIO_TYPE1_IOMMU", "VFIO_TYPE1v2_IOMMU", "VFIO_GET_API_VERSION",
    "VFIO_CHECK_EXTENSION", "VFIO_SET_IOMMU", "VFIO_GROUP_GET_STATUS",
    "VFIO_GROUP_SET_CONTAINER", "VFIO_GROUP_UNSET_CONTAINER", "VFIO_GROUP_GET_DEVICE_FD",
    "VFIO_DEVICE_GET_INFO", "VFIO_DEVICE_GET_REGION_INFO", "VFIO_DEVICE_GET_IRQ_INFO",
    "VFIO_DEVICE_SET_IRQS", "VFIO_DEVICE_RESET", "VFIO_IOMMU_GET_INFO", "VFIO_IOMMU_MAP_DMA",
    "VFIO_IOMMU_UNMAP_DMA", "VFIO_GROUP_FLAGS_VIABLE", "VFIO_GROUP_FLAGS_CONTAINER_SET",
    "VFIO_REGION_INFO_FLAG_READ", "VFIO_REGION_INFO_FLAG_WRITE", "VFIO_REGION_INFO_FLAG_MMAP",
    "VFIO_IRQ_INFO_EVENTFD", "VFIO_IRQ_INFO_MASKABLE", "VFIO_IRQ_SET_DATA_NONE",
    "VFIO_IRQ_SET_DATA_BOOL", "VFIO_IRQ_SET_DATA_EVENTFD", "VFIO_IRQ_SET_ACTION_MASK",
    "VFIO_IRQ_SET_ACTION_UNMASK", "VFIO_IRQ_SET_ACTION_TRIGGER", "VFIO_DMA_MAP_FLAG_READ",
    "VFIO_DMA_MAP_FLAG_WRITE",
]


def header_constants() -> list[str]:
    """Every object-like #define WD_* in the header (except the include guard)."""
    names = re.findall(r"^#define\s+(WD_[A-Z0-9_]+)\s+\S", HEADER.read_text(), re.MULTILINE)
    assert len(names) >= 25, "header parse found too few WD_ constants"
    return names


def c_fields(struct: type[ctypes.Structure]) -> list[str]:
    return [name for name, *_ in struct._fields_ if not name.startswith("_pad")]


def compile_and_run(tmp_path: Path) -> dict[str, int]:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is required for the ABI mirror test")
    lines = ["#include <stdio.h>", "#include <stddef.h>", f'#include "{HEADER}"',
             "#include <linux/vfio.h>", "int main(void) {"]

    def emit(key: str, expr: str) -> None:
        lines.append(f'  printf("%s %llu\\n", "{key}", (unsigned long long)({expr}));')

    for name in header_constants():
        emit(name, name)
    for name in VFIO_CONSTANTS:
        emit(name, name)
    for cname, py in {**WD_STRUCTS, **VFIO_STRUCTS}.items():
        emit(f"sizeof:{cname}", f"sizeof(struct {cname})")
        for f in c_fields(py):
            emit(f"offsetof:{cname}.{f}", f"offsetof(struct {cname}, {f})")
            emit(f"fieldsize:{cname}.{f}", f"sizeof(((struct {cname} *)0)->{f})")
    lines += ["  return 0;", "}"]
    src = tmp_path / "mirror.c"
    src.write_text("\n".join(lines) + "\n")
    exe = tmp_path / "mirror"
    subprocess.run([gcc, "-Wall", "-Werror", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (ln.split() for ln in out.splitlines())}


@pytest.fixture(scope="module")
def c_values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    return compile_and_run(tmp_path_factory.mktemp("mirror"))


def test_every_header_constant_is_mirrored(c_values: dict[str, int]) -> None:
    drift = {}
    for name in header_constants():
        if not hasattr(uapi, name):
            drift[name] = ("missing in uapi.py", c_values[name])
        elif getattr(uapi, name) != c_values[name]:
            drift[name] = (getattr(uapi, name), c_values[name])
    assert not drift, f"uapi.py vs wrapdrive.h (python, C): {drift}"


def test_vfio_constants(c_values: dict[str, int]) -> None:
    drift = {n: (getattr(uapi, n), c_values[n]) for n in VFIO_CONSTANTS
             if getattr(uapi, n) != c_values[n]}
    assert not drift, f"uapi.py vs linux/vfio.h (python, C): {drift}"


def test_struct_layouts(c_values: dict[str, int]) -> None:
    drift = {}
    for cname, py in {**WD_STRUCTS, **VFIO_STRUCTS}.items():
        if ctypes.sizeof(py) != c_values[f"sizeof:{cname}"]:
            drift[f"sizeof {cname}"] = (ctypes.sizeof(py), c_values[f"sizeof:{cname}"])
        for f in c_fields(py):
            field = getattr(py, f)
            if field.offset != c_values[f"offsetof:{cname}.{f}"]:
                drift[f"{cname}.{f} offset"] = (field.offset, c_values[f"offsetof:{cname}.{f}"])
            if field.size != c_values[f"fieldsize:{cname}.{f}"]:
                drift[f"{cname}.{f} size"] = (field.size, c_values[f"fieldsize:{cname}.{f}"])
    assert not drift, f"layout drift (python, C): {drift}"


def test_every_c_field_is_mirrored() -> None:
    """A field added to a struct in the header must appear in uapi.py too."""
    text = HEADER.read_text()
    for cname, py in WD_STRUCTS.items():
        body = re.search(rf"struct {cname} {{(.*?)}};", text, re.DOTALL)
        assert body, cname
        fields = re.findall(r"__[us]\d+\s+(\w+)(?:\[\w+\])?;", body.group(1))
        pyfields = [n.lstrip("_") for n, *_ in py._fields_]
        assert [f.lstrip("_") for f in fields] == pyfields, cname


def test_struct_formats_match_ctypes() -> None:
    assert uapi.DESC_STRUCT.size == ctypes.sizeof(uapi.WdDesc)
    assert uapi.CQE_STRUCT.size == ctypes.sizeof(uapi.WdCqe)
    d = uapi.WdDesc(tag=1, opcode=2, flags=3, src=4, dst=5, src_len=6, dst_len=7, ctx=8,
                    seed=9, stream=10, level=11, flush=12)
    assert uapi.DESC_STRUCT.unpack(bytes(d)) == (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 0)
    c = uapi.WdCqe(tag=9, status=8, flags=5, out_len=7, result=6)
    assert uapi.CQE_STRUCT.unpack(bytes(c)) == (9, 8, 5, 7, 6)
    fields = c_fields(uapi.WdCqe)
    assert [fields[i] for i in (uapi.CQE_STATUS, uapi.CQE_FLAGS, uapi.CQE_OUT_LEN,
                                uapi.CQE_RESULT)] == ["status", "flags", "out_len", "result"]
    assert 1 << uapi.DESC_SHIFT == uapi.DESC_STRUCT.size
    assert 1 << uapi.CQE_SHIFT == uapi.CQE_STRUCT.size


def test_eventfd_struct_is_irq_set_plus_s32() -> None:
    assert ctypes.sizeof(uapi.VfioIrqSetEventfd) == ctypes.sizeof(uapi.VfioIrqSet) + 4
    assert uapi.VfioIrqSetEventfd.fd.offset == ctypes.sizeof(uapi.VfioIrqSet)
