"""`python -m privloc`: the privloc command (privloc.command.cli)."""

import sys

from privloc.command.cli import main

if __name__ == "__main__":
    sys.exit(main())
