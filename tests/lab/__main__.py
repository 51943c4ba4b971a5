"""``python -m tests.lab up|down|status|env|build`` (see lab.py)."""

import sys

from .lab import main

sys.exit(main())
