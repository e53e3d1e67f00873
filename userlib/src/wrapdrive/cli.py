"""The ``wrapdrive`` command: list devices, run an algorithm over files."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__, admin, bench, selection, sysfs
from .abi import WD_MAX_LEN
from .api import request_queue
from .crc import crc32c_combine
from .errors import WrapDriveError
from .queue import Queue
from .selection import flag_names

#: exit status of a command interrupted by Ctrl-C (128 + SIGINT), as shells use.
EXIT_INTERRUPTED = 130

ALGOS = ("sha256", "crc32c", "zlib")

#: work bigger than this reports progress on stderr.
PROGRESS_BYTES = 16 << 20


def queue_state(name: str) -> str:
    """How a queue came to be and whether its owner lives: "in use by pid N",
    "stale: creator pid N is gone" (``wrapdrive gc`` removes it) or
    "provisioned" (an administrator's, kept when released)."""
    if not sysfs.is_ours(name):
        return "provisioned"
    pid = sysfs.creator_pid(name)
    if selection.pid_alive(pid):
        return f"in use by pid {pid}"
    return f"stale: creator pid {pid} is gone"


def _device_dict(dev: sysfs.Device) -> dict[str, Any]:
    return {
        "name": dev.name,
        "numa_zone": dev.numa_zone,
        "priority": dev.priority,
        "selectable": dev.selectable,
        "types": [{
            "name": t.name,
            "algo_type": t.algo_type,
            "flags": t.flags,
            "flag_names": flag_names(t.flags),
            "available_instances": t.available_instances,
            "queues": len(t.devices),
            "queue_states": {name: queue_state(name) for name in t.devices},
        } for t in dev.types],
    }


def cmd_list(args: argparse.Namespace) -> int:
    devs = sysfs.scan(Path(args.sysfs))
    if args.json:
        json.dump([_device_dict(d) for d in devs], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if devs else 1  # as the text form: no device is a failure
    if not devs:
        print("no WrapDrive devices (is a driver such as wd_dummy loaded?)", file=sys.stderr)
        return 1
    for d in devs:
        prio = f"{d.priority}" if d.selectable else f"{d.priority} (out of 1..100: disabled)"
        print(f"{d.name}  numa_zone={d.numa_zone}  priority={prio}")
        for t in d.types:
            print(f"    {t.name:<28} algo_type={t.algo_type:<8} "
                  f"flags={t.flags:#010x} ({flag_names(t.flags)})  "
                  f"free={t.available_instances}  in use={len(t.devices)}")
            for name in t.devices:
                print(f"        {name}  {queue_state(name)}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    """Remove the queues of processes that died without releasing them."""
    root = Path(args.sysfs)
    removed = selection.reclaim(root)
    for name in removed:
        print(f"removed {name}")
    left = [name for d in sysfs.scan(root) for t in d.types for name in t.devices
            if queue_state(name).startswith("stale")]
    if left:
        print(f"wrapdrive gc: {len(left)} stale queue(s) left: {', '.join(left)} "
              "(still open in another process, or removing needs root or the "
              "wrapdrive group)", file=sys.stderr)
        return 1
    if not removed:
        print("no stale queues")
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    try:
        if args.uninstall:
            report = admin.uninstall(args.destdir)
        else:
            report = admin.install(args.group, open_only=args.open_only, destdir=args.destdir)
    except (admin.SetupError, OSError) as exc:
        print(f"wrapdrive setup: {exc}", file=sys.stderr)
        return 1
    for line in report.lines:
        print(line)
    return 0


class Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.done = 0
        self.enabled = enabled and total >= PROGRESS_BYTES
        self.start = time.monotonic()
        self.last = 0.0

    def add(self, n: int, label: str) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.5 and self.done < self.total:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9) / (1 << 20)
        pct = 100.0 * self.done / max(self.total, 1)
        print(f"\r{label}: {pct:5.1f}% {self.done >> 20}/{self.total >> 20} MiB "
              f"{rate:.1f} MiB/s", end="", file=sys.stderr, flush=True)
        if self.done >= self.total:
            print(file=sys.stderr)


def _crc32c_file(q: Queue, path: str, prog: Progress) -> int:
    crc = 0
    first = True
    with open(path, "rb") as f:
        while True:
            chunk = f.read(WD_MAX_LEN)
            if not chunk and not first:
                break
            c = q.crc32c(chunk)
            crc = c if first else crc32c_combine(crc, c, len(chunk))
            first = False
            prog.add(len(chunk), path)
            if len(chunk) < WD_MAX_LEN:
                break
    return crc


def _read_limited(path: str, algo: str) -> bytes:
    size = os.path.getsize(path)
    if size > WD_MAX_LEN:
        raise WrapDriveError(f"{path}: {size} bytes is over the device's per-request limit "
                             f"of {WD_MAX_LEN} bytes, which {algo} cannot split")
    with open(path, "rb") as f:
        return f.read()


def cmd_run(args: argparse.Namespace) -> int:
    algo = args.algo
    sizes = {}
    for p in args.files:
        try:
            sizes[p] = os.path.getsize(p)
        except OSError as exc:
            print(f"wrapdrive: {p}: {exc.strerror}", file=sys.stderr)
            return 1
    prog = Progress(sum(sizes.values()), not args.quiet)
    with request_queue(algo, weak_order=args.weak_order,
                       share_all=args.share_all, root=Path(args.sysfs)) as q:
        for p in args.files:
            if algo == "crc32c":
                print(f"{_crc32c_file(q, p, prog):08x}  {p}")
                continue
            data = _read_limited(p, algo)
            if algo == "sha256":
                print(f"{q.sha256(data).hex()}  {p}")
            else:
                out = q.compress(data)
                with open(p + ".z", "wb") as f:
                    f.write(out)
                print(f"{p} -> {p}.z ({len(data)} -> {len(out)} bytes)")
            prog.add(len(data), p)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="wrapdrive",
                                 description="WrapDrive accelerator queues over vfio-mdev")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    ap.add_argument("--sysfs", default=str(sysfs.SYSFS), help=argparse.SUPPRESS)
    sub = ap.add_subparsers(dest="command")
    ls = sub.add_parser("list", help="devices, numa_zone, priority, capabilities, queues "
                                     "(and which are stale)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_list)
    gc = sub.add_parser("gc", help="remove queues whose creator died without releasing them")
    gc.set_defaults(func=cmd_gc)
    st = sub.add_parser("setup", help="(root) let a group use queues without root: "
                                      "udev rules, helper, system group",
                        description="Install udev rules (/etc/udev/rules.d/70-wrapdrive.rules) "
                                    "and their helper (/usr/local/libexec/wrapdrive-udev), "
                                    "create the system group, reload udev and apply the "
                                    "permissions to the queues there now. See docs/deploy.rst.",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    st.add_argument("--group", default=admin.DEFAULT_GROUP,
                    help="the group whose members may use queues")
    st.add_argument("--open-only", action="store_true",
                    help="members may only open queues root provisioned (no create/remove)")
    st.add_argument("--uninstall", action="store_true",
                    help="take the permissions back, remove the rules and the helper")
    st.add_argument("--destdir", type=Path, default=None,
                    help="install the files under this root only (packaging); no group, "
                         "no udev reload")
    st.set_defaults(func=cmd_setup)
    run = sub.add_parser("run", help="run an algorithm over files on a device queue")
    run.add_argument("algo", choices=ALGOS,
                     help="sha256 (prints like sha256sum), crc32c (prints hex), "
                          "zlib (writes FILE.z)")
    run.add_argument("files", nargs="+", metavar="FILE")
    run.add_argument("--weak-order", action="store_true",
                     help="allow a weakly ordered (WD_WEAK_ORDER) queue")
    run.add_argument("--share-all", action="store_true",
                     help="ask for a WD_CAPA_SHARE_ALL (SVA) queue")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    run.set_defaults(func=cmd_run)
    bn = sub.add_parser("bench", help="queue vs AF_ALG vs in-process vs the engine, "
                                      "side by side in one run",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    bn.add_argument("--rounds", type=int, default=5, help="rounds per path (median taken)")
    bn.add_argument("--seconds", type=float, default=0.25, help="length of one round")
    bn.add_argument("--case", action="append", metavar="ALGO:SIZE", type=_parse_case,
                    help="only these cases (repeatable), e.g. crc32c:64")
    bn.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    bn.add_argument("--plot", type=Path, metavar="PNG",
                    help="draw ops/s against size (needs matplotlib)")
    bn.set_defaults(func=cmd_bench)
    return ap


def _parse_case(text: str) -> tuple[str, int]:
    algo, _, size = text.partition(":")
    if algo not in bench.ALGOS or not size.isdigit():
        raise argparse.ArgumentTypeError(
            f"bad case {text!r}: want ALGO:SIZE with ALGO one of {', '.join(bench.ALGOS)}")
    return algo, int(size)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.rounds < 1 or args.seconds <= 0:
        print("wrapdrive bench: --rounds must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    cases = tuple(args.case) if args.case else bench.DEFAULT_CASES
    cfg = bench.Config(cases=cases, rounds=args.rounds, seconds=args.seconds)
    results = bench.run(cfg)
    rs = bench.ratios(results)
    print(bench.table(results))
    print()
    print(bench.ratio_table(rs))
    print()
    print(bench.spreads(results))
    if args.json:
        bench.write_json(args.json, results, rs, cfg)
        print(f"wrote {args.json}", file=sys.stderr)
        if args.plot:
            bench.plot(args.json, args.plot)
            print(f"wrote {args.plot}", file=sys.stderr)
    elif args.plot:
        print("wrapdrive bench: --plot needs --json", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        rc: int = args.func(args)
        return rc
    except WrapDriveError as exc:
        print(f"wrapdrive: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)  # end the line ^C left
        return EXIT_INTERRUPTED
