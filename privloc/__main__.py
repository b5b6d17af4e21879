"""`python -m privloc`: the privloc command (privloc.cli)."""

import sys

from .cli import main

sys.exit(main())
