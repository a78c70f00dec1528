"""``python -m raftly.bench``: the same as ``raftly bench``."""

import sys

from raftly.bench.cli import main

sys.exit(main(sys.argv[1:]))
