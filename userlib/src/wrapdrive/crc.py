"""CRC-32C helpers the device does not provide: a slow software reference
and crc32c_combine, which joins the CRCs of consecutive pieces (so data
over WD_MAX_LEN can be checked in device-sized pieces)."""

from __future__ import annotations

POLY = 0x82F63B78  # Castagnoli, reflected


def _table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ POLY if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _table()


def crc32c_sw(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Bytewise table CRC-32C; crc32c_sw(b"123456789") == 0xE3069283."""
    c = crc ^ 0xFFFFFFFF
    t = _TABLE
    for b in bytes(data):
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _gf2_times(mat: list[int], vec: int) -> int:
    s = 0
    i = 0
    while vec:
        if vec & 1:
            s ^= mat[i]
        vec >>= 1
        i += 1
    return s


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, mat[n]) for n in range(32)]


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32C of A+B from crc1 = crc(A), crc2 = crc(B), len2 = len(B)."""
    if len2 <= 0:
        return crc1
    odd = [POLY] + [1 << n for n in range(31)]
    even = _gf2_square(odd)
    odd = _gf2_square(even)
    while True:
        even = _gf2_square(odd)
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2
