"""Measurements made by in-guest tests, kept where the host can read them.

Each call appends one JSON line to .cache/vm/measurements.jsonl in the repository
(the folder the guest shares read-write with the host) and prints it, so a
figure quoted in a report comes from a run, with the kernel it ran on."""
import json
import os
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PATH = os.path.join(REPO, ".cache", "vm", "measurements.jsonl")


def record(name, **values):
    rec = {"name": name, "kernel": os.environ.get("WD_KERNEL", ""),
           "uname": os.uname().release, "time": time.time(), **values}
    line = json.dumps(rec, sort_keys=True)
    print(f"[measure] {line}")
    try:
        os.makedirs(os.path.dirname(PATH), exist_ok=True)
        with open(PATH, "a") as f:
            f.write(line + "\n")
    except OSError:
        pass  # a read-only tree: the printed line is all there is
    return rec
