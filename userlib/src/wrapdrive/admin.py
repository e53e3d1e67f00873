"""``wrapdrive setup``: let a group of users use queues without root.

It installs two files and a system group:

- ``/etc/udev/rules.d/70-wrapdrive.rules``: udev gives the group the VFIO
  group node (``/dev/vfio/N``) of every WrapDrive queue and, unless
  ``open_only``, the ``create`` file of every WrapDrive mdev type and the
  ``remove`` file of every queue (delegated creation);
- ``/usr/local/libexec/wrapdrive-udev``: the small shell helper those rules
  run to tell a WrapDrive queue from another mdev;
- the system group (``groupadd --system``) when it does not exist,

then reloads udev and applies the same permissions to what exists now
(with ``open_only``, it also takes create and remove back from the group).
``uninstall`` takes every permission back and removes the two files.
``destdir`` installs the files under another root (packaging, tests) and
touches nothing else.  docs/deploy.rst says what each permission grants.
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

RULES = Path("etc/udev/rules.d/70-wrapdrive.rules")
HELPER = Path("usr/local/libexec/wrapdrive-udev")
DEFAULT_GROUP = "wrapdrive"
UDEV_CONTROL = Path("/run/udev/control")
#: seconds any one external command (groupadd, udevadm, the helper) may take.
COMMAND_TIMEOUT = 60


class SetupError(Exception):
    """Setup could not be done (not root, a command failed)."""


def _data(name: str) -> str:
    return resources.files("wrapdrive").joinpath("data", name).read_text()


def rules_text(group: str, open_only: bool = False) -> str:
    """The rules file for ``group``; ``open_only`` leaves create/remove to root."""
    if not group or not all(c.isalnum() or c in "_-" for c in group):
        raise SetupError(f"bad group name {group!r}")
    text = _data("70-wrapdrive.rules.in")
    if not open_only:
        text += _data("70-wrapdrive-create.rules.in")
    mode = ("open only: queues are provisioned by root" if open_only
            else "open, create and remove")
    return (text.replace("@GROUP@", group).replace("@HELPER@", "/" + str(HELPER))
            .replace("@MODE_TEXT@", mode))


def helper_text() -> str:
    return _data("wrapdrive-udev")


@dataclass
class Report:
    """What setup did, line by line, for the user."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)


def _run(cmd: list[str], report: Report) -> None:
    try:
        subprocess.run(cmd, check=True, timeout=COMMAND_TIMEOUT, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise SetupError(f"{cmd[0]}: not found ({exc.strerror})") from exc
    except subprocess.CalledProcessError as exc:
        raise SetupError(f"{' '.join(cmd)} failed (exit {exc.returncode}): "
                         f"{(exc.stderr or '').strip()}") from exc
    except subprocess.TimeoutExpired as exc:
        raise SetupError(f"{' '.join(cmd)} did not finish in {COMMAND_TIMEOUT} s") from exc
    report.add("ran: " + " ".join(cmd))


def _write(path: Path, text: str, mode: int, report: Report) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    report.add(f"wrote {path}")


def ensure_group(group: str, report: Report) -> None:
    try:
        grp.getgrnam(group)
        report.add(f"group {group} exists")
    except KeyError:
        _run(["groupadd", "--system", group], report)


def install(group: str = DEFAULT_GROUP, open_only: bool = False,
            destdir: Path | None = None) -> Report:
    """Install the rules and the helper (and, without destdir, the group,
    then reload udev and apply the permissions to the queues there now)."""
    report = Report()
    rules = rules_text(group, open_only)
    if destdir is None and os.geteuid() != 0:
        raise SetupError("wrapdrive setup must run as root (it writes /etc/udev/rules.d, "
                         "adds a system group and changes device permissions)")
    root = destdir if destdir is not None else Path("/")
    if destdir is None:
        ensure_group(group, report)
    _write(root / HELPER, helper_text(), 0o755, report)
    _write(root / RULES, rules, 0o644, report)
    if destdir is not None:
        return report
    if UDEV_CONTROL.exists():
        _run(["udevadm", "control", "--reload"], report)
    else:
        report.add("udev is not running: the rules take effect when it starts")
    cmd = ["/" + str(HELPER), "all", group] + (["open"] if open_only else [])
    _run(cmd, report)
    report.add(f"members of {group} may now "
               + ("open queues that root provisioned" if open_only
                  else "create, open and remove WrapDrive queues"))
    report.add(f"add a user with: usermod -aG {group} USER  (effective at their next login)")
    return report


def uninstall(destdir: Path | None = None) -> Report:
    """Take the permissions back (VFIO nodes 0600 root, create and remove
    root-only), then remove the rules and the helper; the group is kept."""
    report = Report()
    if destdir is None and os.geteuid() != 0:
        raise SetupError("wrapdrive setup --uninstall must run as root")
    root = destdir if destdir is not None else Path("/")
    if destdir is None and (root / HELPER).exists():
        _run([str(root / HELPER), "revoke"], report)
    for rel in (RULES, HELPER):
        path = root / rel
        if path.exists():
            path.unlink()
            report.add(f"removed {path}")
    if destdir is None and UDEV_CONTROL.exists() and shutil.which("udevadm"):
        _run(["udevadm", "control", "--reload"], report)
    report.add("the group is kept (groupdel it if nobody needs it)")
    return report
