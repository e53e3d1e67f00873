"""Runs INSIDE a guest booted by tests/qemu/conftest.py: each in-guest pytest file in its
own pytest process (cwd = repo root), with a per-file timeout, writing one JSON result
per file into --out (a folder shared read-write with the host) as soon as it finishes,
so a guest that dies mid-run still leaves the results of the files before.

Standard library only; pytest is run from the same interpreter."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wd_guest_plugin import KmsgReader  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def pytest_cmd(python: str, file: str, report: Path) -> list[str]:
    return [
        python, "-m", "pytest", "-p", "wd_guest_plugin", "-p", "no:cacheprovider",
        f"--wd-report={report}", "-rA", "-v", "--color=no", file,
    ]  # fmt: skip


def run_file(index: int, file: str, out: Path, timeout: float, kmsg: KmsgReader) -> dict[str, object]:
    report = out / f"{index:03d}.report.json"
    (out / f"{index:03d}.started").write_text(file + "\n")
    kmsg.drain()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tools"), env.get("PYTHONPATH", "")]))
    t0 = time.monotonic()
    timed_out = False
    try:
        proc = subprocess.run(
            pytest_cmd(sys.executable, file, report),
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=timeout, check=False,
        )  # fmt: skip
        rc, output = proc.returncode, proc.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        timed_out, rc = True, -9
        output = (e.stdout or b"").decode(errors="replace") + f"\n[wd] TIMEOUT after {timeout:.0f}s\n"
    time.sleep(0.2)  # let late log lines (work queues, deferred frees) land
    result: dict[str, object] = {
        "file": file,
        "returncode": rc,
        "timed_out": timed_out,
        "duration": round(time.monotonic() - t0, 2),
        "output": output,
        "kmsg": kmsg.drain(),
        "tests": [],
    }
    if report.exists():
        try:
            result["tests"] = json.loads(report.read_text()).get("tests", [])
        except ValueError as e:
            result["output"] = f"{output}\n[wd] unreadable report: {e}"
    (out / f"{index:03d}.json").write_text(json.dumps(result, indent=1))
    return result


def preamble(out: Path) -> None:
    """What the host checks before any test: modules loaded, the log up to now."""
    lsmod = Path("/proc/modules").read_text()
    dmesg = subprocess.run(["dmesg"], stdout=subprocess.PIPE, check=False).stdout.decode(errors="replace")
    info = {
        "modules": [ln.split()[0] for ln in lsmod.splitlines() if ln.strip()],
        "dmesg": dmesg.splitlines(),
        "uname": os.uname().release,
        "env": {k: os.environ.get(k, "") for k in ("WD_MODULE_DIR", "WD_KERNEL")},
    }
    (out / "preamble.json").write_text(json.dumps(info, indent=1))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--timeout", type=float, default=300.0, help="per file, seconds")
    p.add_argument("files", nargs="*")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    kmsg = KmsgReader()
    preamble(args.out)
    for i, f in enumerate(args.files):
        res = run_file(i, f, args.out, args.timeout, kmsg)
        print(f"[wd-guest] {f}: exit {res['returncode']} in {res['duration']}s", flush=True)
    (args.out / "done").write_text("ok\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
