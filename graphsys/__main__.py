"""``python -m graphsys`` is the ``graphsys`` command (``torchrun -m graphsys`` too)."""

import sys

from graphsys.cli import main

sys.exit(main())
