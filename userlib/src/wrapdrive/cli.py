"""The ``wrapdrive`` command: list devices, run an algorithm over files."""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from tqdm import tqdm

from . import __version__, admin, bench, selection, sysfs
from .api import request_queue
from .chunks import read_pieces
from .errors import WrapDriveError
from .hashing import crc32c as wd_crc32c
from .hashing import sha256 as wd_sha256
from .queue import Queue
from .selection import flag_names
from .zstream import compressobj

#: exit status of a command interrupted by Ctrl-C (128 + SIGINT), as shells use.
EXIT_INTERRUPTED = 130

ALGOS = ("sha256", "crc32c", "zlib")


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


#: work of at least this many bytes (or of unknown size: standard input)
#: shows a progress bar on stderr.
PROGRESS_BYTES = 16 << 20

#: what `run` names standard input by
STDIN = "-"

#: what `run zlib` appends to a file's name for its output
ZLIB_SUFFIX = ".z"


def sum_name(name: str) -> tuple[str, str]:
    """(prefix, name) as sha256sum prints a file name: a name holding a
    backslash, newline or carriage return is escaped and its line starts
    with a backslash (GNU coreutils)."""
    if not any(c in name for c in "\\\n\r"):
        return "", name
    esc = name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return "\\", esc


class Progress:
    """A tqdm bar on stderr for long work; nothing when quiet, when stderr
    is not a terminal, or when the work is short."""

    def __init__(self, total: int | None, quiet: bool) -> None:
        long_work = total is None or total >= PROGRESS_BYTES
        self.bar: tqdm[Any] | None = None
        if not quiet and long_work and sys.stderr.isatty():
            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                            file=sys.stderr, mininterval=0.5, leave=False)

    def add(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def label(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _open_input(path: str) -> io.BufferedIOBase:
    """The file to read (standard input for ``-``); OSError if it cannot be."""
    if path == STDIN:
        return cast(io.BufferedIOBase, sys.stdin.buffer)
    f = open(path, "rb")  # noqa: SIM115 - closed by the caller
    if stat.S_ISDIR(os.fstat(f.fileno()).st_mode):
        f.close()
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    return f


def _sha256(f: io.BufferedIOBase, path: str, q: Queue, prog: Progress, force: bool) -> str:
    h = wd_sha256(queue=q)
    try:
        while n := h.update_from(f):  # read into the device's staging memory
            prog.add(n)
        return h.hexdigest()
    finally:
        h.close()


def _crc32c(f: io.BufferedIOBase, path: str, q: Queue, prog: Progress, force: bool) -> str:
    crc = 0
    for piece in read_pieces(f):
        crc = wd_crc32c(piece, crc, queue=q)
        prog.add(len(piece))
    return f"{crc:08x}"


def zlib_output(path: str) -> str:
    """The file ``run zlib`` writes for ``path``: ``path.z``."""
    return path + ZLIB_SUFFIX


def _create(path: str, force: bool) -> BinaryIO:
    """``path`` made anew for writing.  An existing ``path`` (file, symlink or
    anything else) is FileExistsError unless ``force``; then it is removed
    first, as gzip -f does, so a symlink is replaced and never written through.
    O_EXCL makes the check and the creation one step."""
    if force:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # IsADirectoryError for a directory: reported as such
    return open(path, "xb")


@contextlib.contextmanager
def _output(path: str, force: bool) -> Iterator[BinaryIO]:
    """``path`` created for writing (see _create), removed again if the work
    fails or is interrupted: a half-written FILE.z is never left behind to
    pass for a whole one (or to block the next run)."""
    dst = _create(path, force)
    try:
        with dst:
            yield dst
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def _zlib(f: io.BufferedIOBase, path: str, q: Queue, prog: Progress, force: bool) -> str:
    """FILE to FILE.z, or standard input to standard output."""
    c = compressobj(queue=q)
    n_in = n_out = 0
    with contextlib.ExitStack() as stack:
        dst: BinaryIO = sys.stdout.buffer if path == STDIN else \
            stack.enter_context(_output(zlib_output(path), force))
        try:
            for piece in read_pieces(f):
                out = c.compress(piece)
                dst.write(out)
                n_in += len(piece)
                n_out += len(out)
                prog.add(len(piece))
            out = c.flush()
        finally:
            c.close()
        dst.write(out)
        n_out += len(out)
    if path == STDIN:
        return ""
    return f"{path} -> {zlib_output(path)} ({n_in} -> {n_out} bytes)"


#: each algorithm's runner: (input, its name, queue, progress, force) -> the line to print
RUNNERS: dict[str, Callable[[io.BufferedIOBase, str, Queue, Progress, bool], str]] = {
    "sha256": _sha256, "crc32c": _crc32c, "zlib": _zlib}


def _total(paths: list[str]) -> int | None:
    total = 0
    for p in paths:
        if p == STDIN:
            return None
        with contextlib.suppress(OSError):
            st = os.stat(p)
            if not stat.S_ISREG(st.st_mode):
                return None
            total += st.st_size
    return total


def _refused(algo: str, path: str, force: bool) -> str | None:
    """Why ``path`` is not worked on before anything is opened, or None:
    ``run zlib`` does not overwrite an existing FILE.z without ``-f``."""
    if algo != "zlib" or path == STDIN or force:
        return None
    out = zlib_output(path)
    if os.path.lexists(out):
        return f"{out} already exists; use -f to overwrite"
    return None


def _file_error(path: str, exc: OSError) -> str:
    """``wrapdrive: NAME: reason`` for a file that could not be read or
    written, naming the file the error is about (FILE or FILE.z)."""
    name = exc.filename if isinstance(exc.filename, str) else path
    return f"wrapdrive: {name}: {exc.strerror or exc}"


def cmd_run(args: argparse.Namespace) -> int:
    """Each file in turn, as sha256sum does: a file that cannot be read (or,
    for zlib, whose FILE.z exists and -f was not given) is reported and
    skipped (exit status 1); the queue is opened for the first file that can."""
    algo = args.algo
    rc = 0
    prog = Progress(_total(args.files), args.quiet)
    with contextlib.ExitStack() as stack:
        stack.callback(prog.close)
        q: Queue | None = None
        for p in args.files:
            why = _refused(algo, p, args.force)
            if why:
                print(f"wrapdrive: {why}", file=sys.stderr)
                rc = 1
                continue
            try:
                f = _open_input(p)
            except OSError as exc:
                print(_file_error(p, exc), file=sys.stderr)
                rc = 1
                continue
            if q is None:
                q = stack.enter_context(request_queue(algo, weak_order=args.weak_order,
                                                      share_all=args.share_all,
                                                      root=Path(args.sysfs)))
            prog.label(p)
            try:
                line = RUNNERS[algo](f, p, q, prog, args.force)
            except OSError as exc:
                if isinstance(exc, WrapDriveError):
                    raise
                print(_file_error(p, exc), file=sys.stderr)
                rc = 1
                continue
            finally:
                if f is not sys.stdin.buffer:
                    f.close()
            if algo == "zlib":
                if line:
                    print(line)
                continue
            prefix, name = sum_name(p)
            print(f"{prefix}{line}  {name}", flush=True)
    return rc


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
    run = sub.add_parser("run", help="run an algorithm over files of any size on a device "
                                     "queue, streaming them with constant memory")
    run.add_argument("algo", choices=ALGOS,
                     help="sha256 (prints like sha256sum), crc32c (prints hex), "
                          "zlib (writes FILE.z, never over an existing one without -f; "
                          "standard input goes to standard output)")
    run.add_argument("files", nargs="+", metavar="FILE", help="a file, or - for standard input")
    run.add_argument("--weak-order", action="store_true",
                     help="allow a weakly ordered (WD_WEAK_ORDER) queue")
    run.add_argument("--share-all", action="store_true",
                     help="ask for a WD_CAPA_SHARE_ALL (SVA) queue")
    run.add_argument("-f", "--force", action="store_true",
                     help="zlib: overwrite an existing FILE.z")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bar (there is none when stderr is not a terminal)")
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
    if args.plot and not args.json:
        print("wrapdrive bench: --plot needs --json", file=sys.stderr)
        return 2
    for out in (args.json, args.plot):
        if out is not None and out.is_dir():  # found now, not after the whole run
            print(f"wrapdrive bench: {out}: {os.strerror(errno.EISDIR)}", file=sys.stderr)
            return 1
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
    except OSError as exc:
        # a file named on the command line that cannot be read or written
        # (a directory, no permission, a full disk): say which, no traceback
        if exc.filename is None:
            raise
        print(f"wrapdrive: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)  # end the line ^C left
        return EXIT_INTERRUPTED
