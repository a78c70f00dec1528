"""``python -m raftly.cli``: the ``raftly`` command without the console script on PATH."""

import sys

from raftly.cli import main

sys.exit(main())
