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
        _res("queue-poll-b64", "crc32c", 64, 600.0),
        _res("queue-poll-b1", "crc32c", 64, 250.0),
        _res("afalg", "crc32c", 64, 100.0),
        _res("queue-poll-b1", "sha256", 64, 40.0),
        _res("afalg", "sha256", 64, 50.0),
        _res("queue-poll-b16", "sha256", 65536, 9.0),
        _res("queue-poll-b64", "sha256", 65536, 10.0),
        _res("engine", "sha256", 65536, 10.0),
        _res("afalg", "sha256", 65536, 12.0),
    ]
    by_name = {r.name: r for r in bench.ratios(results)}
    assert by_name["crc32c 64 B batch 64: queue / AF_ALG ops/s"].value == 6.0
    assert by_name["crc32c 64 B batch 64: queue / AF_ALG ops/s"].met
    rt = by_name["crc32c 64 B batch 1 round trip: queue / AF_ALG time"]
    assert rt.value == pytest.approx(0.4) and rt.met
    rt = by_name["sha256 64 B batch 1 round trip: queue / AF_ALG time"]
    assert rt.value == pytest.approx(1.25) and not rt.met
    assert by_name["sha256 64 KiB: best queue / engine ops/s"].value == 1.0
    af = by_name["sha256 64 KiB: best queue / AF_ALG ops/s"]
    assert af.value == pytest.approx(10 / 12) and not af.met
    assert "MISSED" in bench.ratio_table(list(by_name.values()))


def test_no_afalg_means_no_afalg_ratio() -> None:
    results = [_res("queue-poll-b64", "crc32c", 64, 600.0)]
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


def test_engine_threads_found_by_name(tmp_path: Path) -> None:
    for pid, comm in ((12, "wd_dummy/0\n"), (13, "python3\n"), (14, "wd_dummy/1\n")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm)
    (tmp_path / "15").mkdir()  # exited: no comm
    (tmp_path / "self").mkdir()
    assert sorted(bench.engine_threads(tmp_path)) == [12, 14]
