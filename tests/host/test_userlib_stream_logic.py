"""Property tests (hypothesis) of the streaming logic that needs no device:
cutting data into pieces, reading files in pieces, flat byte views, joining
CRC-32Cs of pieces (the Python reference and libwd's wd_crc32c_combine,
which libwd's pipelined crc32c relies on), and the CLI's sha256sum-style
names checked against sha256sum itself."""

from __future__ import annotations

import array
import hashlib
import io
import os
import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wrapdrive import cli
from wrapdrive._native import lib
from wrapdrive.chunks import as_bytes_view, pieces, read_pieces
from wrapdrive.crc import crc32c_combine, crc32c_sw
from wrapdrive.zstream import _device_level

DATA = st.binary(max_size=5000)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """data cut at the given offsets (sorted, clamped): empty pieces allowed."""
    bounds = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@given(DATA, st.integers(1, 600))
def test_pieces_cover_the_data_in_bounded_pieces(data: bytes, size: int) -> None:
    ps = list(pieces(memoryview(data), size))
    assert b"".join(ps) == data
    assert all(0 < len(p) <= size for p in ps)
    assert len(ps) == -(-len(data) // size)
    assert all(len(p) == size for p in ps[:-1])


def test_pieces_rejects_a_bad_size() -> None:
    with pytest.raises(ValueError):
        list(pieces(memoryview(b"x"), 0))


class Trickle(io.RawIOBase):
    """A file that returns at most `step` bytes per read, as a pipe may."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self.step, len(self.data) - self.pos)
        b[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


@given(DATA, st.integers(1, 700), st.integers(1, 900))
def test_read_pieces_reads_everything_through_one_buffer(data: bytes, size: int,
                                                         step: int) -> None:
    got = bytearray()
    views = []
    for p in read_pieces(Trickle(data, step), size):  # type: ignore[arg-type]
        assert 0 < len(p) <= size
        got += p
        views.append(p.obj)
    assert bytes(got) == data
    assert len({id(v) for v in views}) <= 1  # constant memory: one buffer reused


@given(st.lists(st.integers(-2**31, 2**31 - 1), max_size=50),
       st.sampled_from(["i", "I", "h", "q", "d"]))
def test_bytes_view_of_any_buffer_counts_bytes(items: list[int], fmt: str) -> None:
    arr = array.array(fmt, [float(i) if fmt == "d" else
                            (i & 0xFFFF) - (0x8000 if fmt == "h" else 0) if fmt == "h" else
                            abs(i) if fmt == "I" else i for i in items])
    v = as_bytes_view(arr)
    assert v.format == "B" and len(v) == len(arr) * arr.itemsize
    assert bytes(v) == arr.tobytes()
    # hashlib hashes the same bytes
    assert hashlib.sha256(v).digest() == hashlib.sha256(arr.tobytes()).digest()


def test_bytes_view_refuses_what_hashlib_refuses() -> None:
    with pytest.raises(TypeError, match="encoded"):
        as_bytes_view("text")
    with pytest.raises(TypeError):
        as_bytes_view(42)
    with pytest.raises(ValueError):
        as_bytes_view(memoryview(b"abcdef")[::2])


@given(DATA, st.lists(st.integers(0, 5000), max_size=6), st.integers(0, 2**32 - 1))
def test_crcs_of_any_split_combine_to_the_whole(data: bytes, cuts: list[int],
                                                start: int) -> None:
    want = crc32c_sw(data, start)
    crc_py = crc_c = start
    for p in split(data, cuts):
        piece = crc32c_sw(p)
        crc_py = crc32c_combine(crc_py, piece, len(p))
        crc_c = lib.wd_crc32c_combine(crc_c, piece, len(p))
    assert crc_py == crc_c == want


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**40))
def test_c_and_python_combine_agree_for_any_length(c1: int, c2: int, n: int) -> None:
    assert lib.wd_crc32c_combine(c1, c2, n) == crc32c_combine(c1, c2, n)


@given(st.integers(-1, 9))
def test_zlib_levels_map_to_the_descriptor(level: int) -> None:
    dev = _device_level(level)
    if level == -1:
        assert dev == lib.WD_LEVEL_DEFAULT
    elif level == 0:
        assert dev == lib.WD_LEVEL_STORE
    else:
        assert dev == level
    assert zlib.decompress(zlib.compress(b"x", level)) == b"x"  # a level zlib knows


@pytest.mark.parametrize("level", [-2, 10, 100])
def test_bad_zlib_levels_are_refused(level: int) -> None:
    with pytest.raises(ValueError):
        _device_level(level)


NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0")


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
# "-" is standard input to sha256sum and to `wrapdrive run` alike: not a file name.
@given(st.text(NAME_CHARS, min_size=1, max_size=12).filter(lambda s: s not in (".", "..", "-")))
def test_file_names_print_like_sha256sum(tmp_path: Path, name: str) -> None:
    try:
        (tmp_path / name).write_bytes(b"x")
    except OSError:  # a name the filesystem refuses (too long in bytes)
        return
    try:
        ref = subprocess.run(["sha256sum", "--", name], cwd=tmp_path, capture_output=True,
                             check=True).stdout.decode("utf-8", "surrogateescape")
        prefix, shown = cli.sum_name(name)
        digest = hashlib.sha256(b"x").hexdigest()
        assert ref == f"{prefix}{digest}  {shown}\n"
    finally:
        os.unlink(tmp_path / name)


def test_no_progress_bar_when_stderr_is_not_a_terminal() -> None:
    prog = cli.Progress(None, quiet=False)  # pytest captures stderr: not a TTY
    assert prog.bar is None
    prog.add(10)
    prog.close()
    assert cli.Progress(1 << 40, quiet=True).bar is None
