"""WrapDrive's own fuzzer: the engine (stdlib only; the phases are in test_kernel_fuzz.py).

Seeded and reproducible.  Input i of a phase is drawn from random.Random("SEED/PHASE/i")
alone, so any one input can be drawn again without the ones before it:

    WD_FUZZ_SEED=1234 WD_FUZZ_ONLY=desc:517 python -m pytest tests/qemu/guest/test_kernel_fuzz.py

An input is plain data (JSON): symbolic where the run decides a value (a buffer's
address is ["A", offset], resolved when the input runs).  A phase runs in a child
process that owns its queues (a queue belongs to the mm that opened it): the child
reports the index of each input before running it, so an input that kills the child
(a SIGBUS from a mapping, say) is still named.  After each input the child reads the
new kernel log records: a splat (verdict.SPLAT_PATTERNS) fails the phase there.  A
failure prints the seed, the phase, the index and the input, and appends the input to
WD_OUT/fuzz-failures.json: copy it into fuzz_corpus.json (every input that ever broke
something is kept there and replayed first, each run).
"""
import json
import os
import random
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(__file__))

import verdict  # noqa: E402  (tools/ is on the guest's PYTHONPATH)
import wd_measure  # noqa: E402

CORPUS = os.path.join(os.path.dirname(__file__), "fuzz_corpus.json")
ENV_SEED = "WD_FUZZ_SEED"
ENV_ONLY = "WD_FUZZ_ONLY"
ENV_INPUTS = "WD_FUZZ_INPUTS"


class Violation(AssertionError):
    """An input got an answer the contract does not allow."""


def seed():
    """The run's seed: $WD_FUZZ_SEED, or a fresh one (printed by every phase)."""
    s = os.environ.get(ENV_SEED)
    if s is None:
        s = str(random.SystemRandom().randrange(1 << 32))
        os.environ[ENV_SEED] = s
    return int(s)


def inputs_per_phase(default):
    return int(os.environ.get(ENV_INPUTS, default))


def rng_for(run_seed, phase, i):
    return random.Random(f"{run_seed}/{phase}/{i}")


def corpus(phase):
    """Inputs of this phase that once broke something."""
    if not os.path.exists(CORPUS):
        return []
    with open(CORPUS) as f:
        return [c["input"] for c in json.load(f) if c["phase"] == phase]


class KmsgWatch:
    """New kernel log records since the last look, filtered for splats."""

    def __init__(self):
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def splats(self):
        lines = []
        while True:
            try:
                rec = os.read(self.fd, 8192).decode(errors="replace")
            except BlockingIOError:
                break
            except BrokenPipeError:  # overwritten records: keep reading
                continue
            lines.append(rec.partition(";")[2].split("\n", 1)[0])
        return verdict.find_splats(lines)

    def close(self):
        os.close(self.fd)


def _record_failure(rec):
    out = os.environ.get("WD_OUT")
    if not out or not os.path.isdir(out):
        return
    path = os.path.join(out, "fuzz-failures.json")
    old = []
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
    with open(path, "w") as f:
        json.dump(old + [rec], f, indent=1)


def _describe(run_seed, phase, i, inp, why):
    where = "corpus case" if i < 0 else f"input #{i}"
    return (f"fuzz phase {phase!r}, {where} (reproduce: {ENV_SEED}={run_seed} "
            f"{ENV_ONLY}={phase}:{i}): {why}\n  input: {json.dumps(inp)}")


def _child(phase, run_seed, n, gen, setup, execute, teardown, w):
    """Runs in the child: setup, corpus, n random inputs, teardown.  Writes one JSON
    line per event to w: {"i": i} before an input, {"done": stats} or {"fail": ...}."""
    def say(**rec):
        data = (json.dumps(rec) + "\n").encode()
        while data:
            data = data[os.write(w, data):]

    watch = KmsgWatch()
    stats = {"inputs": 0, "corpus": 0}
    only = os.environ.get(ENV_ONLY, "")
    cases = [(-1 - k, inp) for k, inp in enumerate(corpus(phase))]
    if only:
        p, _, idx = only.partition(":")
        cases = [] if p != phase else (
            [(int(idx), gen(rng_for(run_seed, phase, int(idx))))] if int(idx) >= 0
            else [c for c in cases if c[0] == int(idx)])
        indices = []
    else:
        indices = range(n)
    ctx = None
    i, inp = None, None
    try:
        ctx = setup()
        for i, inp in cases:
            say(i=i, input=inp)
            execute(inp, ctx)
            stats["corpus"] += 1
            found = watch.splats()
            if found:
                raise Violation("kernel log: " + " | ".join(found[:3]))
        for i in indices:
            inp = gen(rng_for(run_seed, phase, i))
            say(i=i)
            execute(inp, ctx)
            stats["inputs"] += 1
            found = watch.splats()
            if found:
                raise Violation("kernel log: " + " | ".join(found[:3]))
        i, inp = "teardown", None
        stats.update(teardown(ctx) or {})
        ctx = None
        found = watch.splats()
        if found:
            raise Violation("kernel log after the phase: " + " | ".join(found[:3]))
        say(done=stats)
    except BaseException as e:  # noqa: BLE001  (reported to the parent)
        say(fail=_describe(run_seed, phase, i, inp, f"{type(e).__name__}: {e}"),
            i=i, input=inp, trace=traceback.format_exc())
        if ctx is not None:
            try:
                teardown(ctx)
            except BaseException:  # noqa: BLE001
                pass
    finally:
        os._exit(0)


def run_phase(phase, n, gen, setup, execute, teardown):
    """Runs a phase in a child; returns its stats, or fails naming the input."""
    run_seed = seed()
    print(f"[fuzz] phase {phase}: seed {run_seed}, {n} inputs + corpus "
          f"({ENV_SEED}={run_seed} to reproduce)")
    r, w = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(phase, run_seed, n, gen, setup, execute, teardown, w)
    os.close(w)
    last, result = None, None
    buf = b""
    with os.fdopen(r, "rb") as f:
        while True:
            chunk = f.read1(65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                rec = json.loads(line)
                if "fail" in rec or "done" in rec:
                    result = rec
                else:
                    last = rec
    _, status = os.waitpid(pid, 0)
    elapsed = time.monotonic() - t0
    if result is None or "fail" in result:
        if result is None:
            i = last["i"] if last else None
            inp = (last.get("input") if last and "input" in last
                   else gen(rng_for(run_seed, phase, i)) if isinstance(i, int) and i >= 0
                   else None)
            why = (f"the phase's process died (signal {os.WTERMSIG(status)})"
                   if os.WIFSIGNALED(status) else f"the phase's process exited, status {status:#x}")
            msg = _describe(run_seed, phase, i, inp, why)
            rec = {"phase": phase, "seed": run_seed, "i": i, "input": inp, "why": why}
        else:
            msg = result["fail"] + "\n" + result.get("trace", "")
            inp = result.get("input")
            if inp is None and isinstance(result.get("i"), int) and result["i"] >= 0:
                inp = gen(rng_for(run_seed, phase, result["i"]))
            rec = {"phase": phase, "seed": run_seed, "i": result.get("i"), "input": inp,
                   "why": result["fail"].split("\n", 1)[0]}
        _record_failure(rec)
        raise AssertionError(msg)
    stats = result["done"]
    stats["seconds"] = round(elapsed, 1)
    wd_measure.record("fuzz", phase=phase, seed=run_seed, **stats)
    return stats

