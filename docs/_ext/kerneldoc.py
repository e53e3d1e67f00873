"""``.. kernel-doc:: PATH``: the kernel-doc comments of a C file (relative to the
repository), rendered by the kernel's own scripts/kernel-doc, as the kernel's
documentation does.

The script comes from the kernel trees the project already has: WD_KERNEL_DOC
names it, else the first scripts/kernel-doc found under ~/.cache/wrapdrive/kernels
(the unpacked Debian 6.12 kernel has it in usr/lib/linux-kbuild-6.12*/).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import sphinx
from docutils.parsers.rst import Directive
from docutils.statemachine import ViewList
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util.nodes import nested_parse_with_titles

REPO = Path(__file__).resolve().parents[2]
KERNELS = Path.home() / ".cache" / "wrapdrive" / "kernels"
LINENO = re.compile(r"^\.\. LINENO (\d+)$")
#: seconds kernel-doc may take on one file
TIMEOUT = 120


def find_kernel_doc() -> Path:
    env = os.environ.get("WD_KERNEL_DOC")
    if env:
        return Path(env)
    found = sorted(KERNELS.glob("*/usr/lib/linux-kbuild-*/scripts/kernel-doc"))
    found += sorted(KERNELS.glob("*/build/scripts/kernel-doc"))
    if not found:
        raise ExtensionError("scripts/kernel-doc not found: run tools/build.py kernels, "
                             "or set WD_KERNEL_DOC to the kernel's scripts/kernel-doc")
    return found[-1]


class KernelDoc(Directive):
    required_arguments = 1
    has_content = False

    def run(self) -> list:  # type: ignore[type-arg]
        path = REPO / self.arguments[0]
        env = self.state.document.settings.env
        env.note_dependency(str(path))
        cmd = ["perl", str(find_kernel_doc()), "-rst", "-sphinx-version", sphinx.__version__,
               "-enable-lineno", str(path)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
        if r.returncode or "warning" in r.stderr.lower():
            raise self.error(f"kernel-doc {path}: exit {r.returncode}\n{r.stderr}")
        lines = ViewList()
        lineno = 0
        for line in r.stdout.splitlines():
            m = LINENO.match(line)
            if m:  # where the next lines come from, for messages (as the kernel's ext does)
                lineno = int(m.group(1)) - 1
                continue
            lines.append(line, str(path), lineno)
        node = sphinx.addnodes.desc()  # a container; its children are what counts
        nested_parse_with_titles(self.state, lines, node)
        return node.children


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("kernel-doc", KernelDoc)
    return {"version": "1", "parallel_read_safe": True}
