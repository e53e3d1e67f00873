"""How the batch calls (crc32c_many, sha256_many, map) lay out their input
for libwd: the chunks end to end and a C array of their lengths.  The
device's answers to such batches are tested in the guest
(test_userlib_api.py); here, the layout for every kind of chunk a user may
pass, and the errors for what is not data."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from wrapdrive import abi
from wrapdrive.errors import RequestTooLargeError
from wrapdrive.memory import Buffer
from wrapdrive.queue import Queue


def layout(chunks: Iterable[Any]) -> tuple[bytes, list[int], int]:
    data, lens, n = Queue._pieces(chunks)
    return bytes(data), list(lens), n


def test_bytes_like_chunks_are_joined_in_order() -> None:
    chunks = [b"abc", bytearray(b""), memoryview(b"defg")[1:], b"h" * 1000]
    assert layout(chunks) == (b"abc" + b"efg" + b"h" * 1000, [3, 0, 3, 1000], 4)


def test_any_iterable_is_taken_once() -> None:
    gen = (bytes([i]) * i for i in range(5))
    assert layout(gen) == (b"\x01\x02\x02\x03\x03\x03\x04\x04\x04\x04", [0, 1, 2, 3, 4], 5)
    assert layout(()) == (b"", [], 0)


def test_buffers_are_read_through_their_memory() -> None:
    buf = Buffer(4096)
    buf.write(b"shared!")
    try:
        assert layout([b"x", buf, b"y"]) == (b"x" + bytes(buf.view) + b"y", [1, 4096, 1], 3)
        assert layout([buf.view[:7]]) == (b"shared!", [7], 1)
    finally:
        buf.close()


@pytest.mark.parametrize("bad", ["text", 7, None])
def test_a_chunk_that_is_not_data_is_refused(bad: object) -> None:
    chunks: list[Any] = [b"ok", bad]
    with pytest.raises(TypeError):
        Queue._pieces(chunks)


def test_a_chunk_over_the_device_limit_is_refused_before_any_copy() -> None:
    class Huge:
        def __len__(self) -> int:
            return abi.WD_MAX_LEN + 1

    chunks: list[Any] = [b"ok", Huge()]
    with pytest.raises(RequestTooLargeError):
        Queue._pieces(chunks)
