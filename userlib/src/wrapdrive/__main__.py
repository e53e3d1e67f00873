"""python -m wrapdrive: the same as the ``wrapdrive`` command."""

import sys

from .cli import main

sys.exit(main())
