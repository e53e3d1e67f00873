"""Host tests of the benchmark's arithmetic and command line (no device)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
from wrapdrive import bench, cli


def _res(path: str, algo: str, size: int, *rounds: float) -> bench.Result:
    return bench.Result(path, algo, size, list(rounds))


def test_median_and_spread() -> None:
    r = _res("afalg", "crc32c", 64, 90.0, 100.0, 130.0)
    assert r.median == 100.0
    assert r.spread == pytest.approx(0.4)
    assert _res("x", "crc32c", 64, 5.0).spread == 0.0
    d = r.as_dict()
    assert d["median_ops"] == 100.0 and d["median_mbps"] == pytest.approx(100 * 64 / 1e6)


def test_ratios_are_computed_from_one_run_against_the_targets() -> None:
    results = [
        _res("py-many-b64", "crc32c", 64, 600.0),
        _res("py-call", "crc32c", 64, 150.0),
        _res("c-sync", "crc32c", 64, 120.0),
        _res("prepared-b64", "crc32c", 64, 1200.0),
        _res("afalg", "crc32c", 64, 100.0),
        _res("py-call", "sha256", 65536, 9.0),
        _res("engine", "sha256", 65536, 10.0),
        _res("afalg", "sha256", 65536, 6.0),
        _res("py-call", "zlib", 262144, 8.0),
        _res("c-call", "zlib", 262144, 9.5),
        _res("engine", "zlib", 262144, 10.0),
        _res("py-decompress", "zlib", 262144, 19.0),
        _res("engine-inflate", "zlib", 262144, 20.0),
    ]
    by_name = {r.name: r for r in bench.ratios(results)}
    many = by_name["crc32c 64 B q.crc32c_many(b64) / AF_ALG"]
    assert many.value == 6.0 and many.met and many.target == ">= 5"
    one = by_name["crc32c 64 B q.crc32c() one at a time / AF_ALG"]
    assert one.value == 1.5 and not one.met
    assert by_name["crc32c 64 B C wd_send_sync+wd_recv_sync / AF_ALG"].met
    assert by_name["crc32c 64 B C prepared b64 / AF_ALG"].value == 12.0
    eng = by_name["sha256 64 KiB q.sha256() / engine"]
    assert eng.value == pytest.approx(0.9) and not eng.met
    assert by_name["sha256 64 KiB q.sha256() / AF_ALG"].value == pytest.approx(1.5)
    assert not by_name["zlib 256 KiB q.compress() / engine"].met
    assert by_name["zlib 256 KiB C wd_do_xfer deflate / engine"].met
    inflate = by_name["zlib 256 KiB q.decompress() / engine inflate"]
    assert inflate.value == pytest.approx(0.95) and inflate.met
    assert "MISSED" in bench.ratio_table(list(by_name.values()))


def test_no_afalg_means_no_afalg_ratio() -> None:
    results = [_res("py-many-b64", "crc32c", 64, 600.0)]
    assert bench.ratios(results) == []


def test_ops_per_second_counts_what_steps_report() -> None:
    rate = bench.ops_per_second(lambda: 3, 0.02)
    assert rate > 0
    calls: list[int] = []

    def step() -> int:
        calls.append(1)
        return 1

    bench.ops_per_second(step, 0.02)
    assert len(calls) > 1


def test_sample_data_is_deterministic_and_compressible() -> None:
    a = bench.sample_data(65536)
    assert a == bench.sample_data(65536) and len(a) == 65536
    assert len(zlib.compress(a)) < len(a) // 2
    assert bench.sample_data(0) == b""


def test_json_roundtrip(tmp_path: Path) -> None:
    results = [_res("cpu", "sha256", 64, 1.0, 2.0, 3.0)]
    out = tmp_path / "b.json"
    bench.write_json(out, results, bench.ratios(results), bench.Config(rounds=3))
    doc = json.loads(out.read_text())
    assert doc["results"][0]["median_ops"] == 2.0
    assert doc["config"]["rounds"] == 3


@pytest.mark.parametrize("bad", ["crc32c", "md5:64", "sha256:big"])
def test_bench_rejects_bad_cases(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["bench", "--case", bad])
    assert "bad case" in capsys.readouterr().err


def test_bench_rejects_bad_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--rounds", "0"]) == 2
    assert "--rounds" in capsys.readouterr().err


def test_json_keeps_one_entry_per_path_algo_size(tmp_path: Path) -> None:
    results = [_res("py-call", "crc32c", 64, 1.0, 3.0), _res("afalg", "crc32c", 64, 2.0),
               _res("py-call", "crc32c", 4096, 5.0)]
    out = tmp_path / "b.json"
    bench.write_json(out, results, [], bench.Config())
    keys = [(r["path"], r["algo"], r["size"]) for r in json.loads(out.read_text())["results"]]
    assert len(keys) == len(set(keys)) == 3


def test_c_benchmark_found_where_make_puts_it(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    assert bench.C_BENCH_DEFAULT.parent.name == "libwd"
    prog = tmp_path / "wd_bench"
    monkeypatch.setenv(bench.C_BENCH_ENV, str(prog))
    assert bench.c_bench_path() is None
    prog.write_text("#!/bin/sh\ntest \"$6\" = text && echo ops_per_sec 1234.5\n")
    prog.chmod(0o755)
    assert bench.c_bench_path() == prog
    assert bench.c_step(prog, "crc32c", 64, "sync", 1, 0.01) == 1234.5


def test_nothing_is_pinned() -> None:
    text = Path(bench.__file__).read_text()
    assert "sched_setaffinity" not in text


def test_device_dma_row_is_a_figure_without_a_target() -> None:
    size = bench.DMA_COPY_SIZE
    results = [_res("dummy-copy", "memcpy", size, 200.0), _res("edu-dma-copy", "memcpy", size, 0.5)]
    (r,) = bench.ratios(results)
    assert r.name == "memcpy 16 KiB edu DMA q.copy() / wd_dummy" and r.value == pytest.approx(0.0025)
    assert r.target == "" and "(a figure, no target)" in bench.ratio_table([r])
    assert "memcpy 16 KiB" in bench.table(results) and "edu-dma-copy" in bench.table(results)


def test_device_dma_row_needs_an_edu_device(tmp_path: Path) -> None:
    assert bench.device_copy(bench.Config(), root=tmp_path) == []
