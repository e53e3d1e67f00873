"""The ABI the in-guest kernel tests speak, read from the headers themselves.

kernel/uapi/wrapdrive.h and <linux/vfio.h> are compiled with gcc into a tiny
program that prints every WD_* constant, the VFIO constants the tests use,
and the size and offset of every field of every struct wd_*; its output is
cached by the headers' hash.  So the tests cannot drift from the kernel's
definition: there is no hand copy of a number here (stdlib only).
"""
import hashlib
import json
import os
import re
import subprocess
import tempfile

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
UAPI = os.path.join(REPO, "kernel", "uapi", "wrapdrive.h")
VFIO_H = "/usr/include/linux/vfio.h"

# VFIO names the tests use (linux/vfio.h defines far more).
VFIO_NAMES = (
    "VFIO_API_VERSION", "VFIO_TYPE1v2_IOMMU",
    "VFIO_GET_API_VERSION", "VFIO_CHECK_EXTENSION", "VFIO_SET_IOMMU",
    "VFIO_GROUP_GET_STATUS", "VFIO_GROUP_SET_CONTAINER", "VFIO_GROUP_GET_DEVICE_FD",
    "VFIO_DEVICE_GET_INFO", "VFIO_DEVICE_GET_REGION_INFO", "VFIO_DEVICE_GET_IRQ_INFO",
    "VFIO_DEVICE_SET_IRQS", "VFIO_DEVICE_RESET", "VFIO_IOMMU_MAP_DMA", "VFIO_IOMMU_UNMAP_DMA",
    "VFIO_DEVICE_FLAGS_RESET", "VFIO_DEVICE_FLAGS_PLATFORM",
    "VFIO_REGION_INFO_FLAG_READ", "VFIO_REGION_INFO_FLAG_WRITE", "VFIO_REGION_INFO_FLAG_MMAP",
    "VFIO_IRQ_INFO_EVENTFD", "VFIO_IRQ_INFO_MASKABLE",
    "VFIO_IRQ_SET_DATA_NONE", "VFIO_IRQ_SET_DATA_BOOL", "VFIO_IRQ_SET_DATA_EVENTFD",
    "VFIO_IRQ_SET_ACTION_MASK", "VFIO_IRQ_SET_ACTION_UNMASK", "VFIO_IRQ_SET_ACTION_TRIGGER",
    "VFIO_DMA_MAP_FLAG_READ", "VFIO_DMA_MAP_FLAG_WRITE", "VFIO_DMA_MAP_FLAG_VADDR",
    "VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP", "VFIO_DMA_UNMAP_FLAG_ALL", "VFIO_DMA_UNMAP_FLAG_VADDR",
    "VFIO_GROUP_UNSET_CONTAINER", "VFIO_IOMMU_GET_INFO",
)

# userfaultfd names the scheduling tests use (a buffer whose pages never come).
UFFD_NAMES = (
    "SYS_userfaultfd", "UFFD_API", "UFFDIO_API", "UFFDIO_REGISTER",
    "UFFDIO_REGISTER_MODE_MISSING",
    # and the module calls the fault-injection tests make themselves
    "SYS_init_module", "SYS_delete_module",
)

# Arguments at which the header's wd_deflate_bound() is evaluated,
# so that deflate_bound() below is checked against the header.
BOUND_SAMPLES = (0, 1, 4095, 65536, 300000, 1 << 20, 16 << 20)

_DEFINE = re.compile(r"^#define\s+(WD_[A-Z0-9_]+)\s+\S", re.M)
_STRUCT = re.compile(r"^struct\s+(wd_\w+)\s*\{(.*?)^\};", re.M | re.S)
_FIELD = re.compile(r"^\s*__[us]\d+\s+(\w+)(?:\[[^\]]*\])?\s*;", re.M)


def _program(text):
    """C source printing the constants and struct layouts as JSON lines."""
    lines = ["#include <stddef.h>", "#include <stdio.h>", "#include <sys/syscall.h>",
             "#include <linux/userfaultfd.h>", "#include <linux/vfio.h>",
             '#include "wrapdrive.h"', "int main(void) {"]
    for name in _DEFINE.findall(text) + list(VFIO_NAMES) + list(UFFD_NAMES):
        lines.append(f'printf("[\\"C\\", \\"{name}\\", %llu]\\n", '
                     f"(unsigned long long)({name}));")
    for sname, body in _STRUCT.findall(text):
        lines.append(f'printf("[\\"S\\", \\"{sname}\\", %zu]\\n", sizeof(struct {sname}));')
        for f in _FIELD.findall(body):
            lines.append(f'printf("[\\"F\\", \\"{sname}.{f}\\", %zu, %zu]\\n", '
                         f"offsetof(struct {sname}, {f}), "
                         f"sizeof(((struct {sname} *)0)->{f}));")
    for n in BOUND_SAMPLES:
        lines.append(f'printf("[\\"B\\", {n}, %llu]\\n", '
                     f"(unsigned long long)wd_deflate_bound({n}ULL));")
    lines += ["return 0;", "}"]
    return "\n".join(lines) + "\n"


def _load():
    with open(UAPI) as f:
        text = f.read()
    with open(VFIO_H, "rb") as f:
        key = hashlib.sha256(text.encode() + f.read() + _program(text).encode()).hexdigest()[:16]
    cache = os.path.join(tempfile.gettempdir(), f"wd-abi-{key}.json")
    if os.path.exists(cache):
        with open(cache) as f:
            return json.load(f)
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "abi.c"), os.path.join(d, "abi")
        with open(src, "w") as f:
            f.write(_program(text))
        subprocess.run(["gcc", "-Wall", "-Werror", "-I", os.path.dirname(UAPI), "-o", exe, src],
                       check=True, timeout=120)
        out = subprocess.run([exe], check=True, capture_output=True, text=True, timeout=30).stdout
    data = {"const": {}, "size": {}, "field": {}, "bound": {}}
    for line in out.splitlines():
        rec = json.loads(line)
        if rec[0] == "C":
            data["const"][rec[1]] = rec[2]
        elif rec[0] == "B":
            data["bound"][str(rec[1])] = rec[2]
        elif rec[0] == "S":
            data["size"][rec[1]] = rec[2]
        else:
            data["field"][rec[1]] = [rec[2], rec[3]]
    tmp = cache + f".{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, cache)
    return data


_ABI = _load()
CONST = _ABI["const"]


def deflate_bound(n):
    """wd_deflate_bound(n) of the header; checked against the compiled one at import."""
    return n + (n >> 12) + (n >> 14) + (n >> 25) + 13


for _n, _want in _ABI["bound"].items():
    assert deflate_bound(int(_n)) == _want, f"wd_deflate_bound({_n}) changed in the header"


def sizeof(struct):
    return _ABI["size"][struct]


def offsetof(struct, field):
    return _ABI["field"][f"{struct}.{field}"][0]


class Layout:
    """Packs and unpacks one struct wd_* by field name, as the compiler laid it out."""

    def __init__(self, struct):
        self.name = struct
        self.size = sizeof(struct)
        self.fields = {k.split(".", 1)[1]: tuple(v) for k, v in _ABI["field"].items()
                       if k.split(".", 1)[0] == struct}

    def pack_into(self, buf, off, **values):
        raw = bytearray(self.size)
        for name, value in values.items():
            foff, fsize = self.fields[name]
            raw[foff:foff + fsize] = int(value).to_bytes(fsize, "little")
        buf[off:off + self.size] = raw

    def pack(self, **values):
        raw = bytearray(self.size)
        self.pack_into(raw, 0, **values)
        return bytes(raw)

    def unpack_from(self, buf, off=0):
        """A dict of the named (non-array, non-reserved) fields."""
        out = {}
        for name, (foff, fsize) in self.fields.items():
            if name.startswith("__") or fsize > 8:
                continue
            out[name] = int.from_bytes(bytes(buf[off + foff:off + foff + fsize]), "little")
        return out
