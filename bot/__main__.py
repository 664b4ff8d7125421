"""`python -m bot` (also installed as `greenlight`): the command line."""

import sys

from bot.entrypoints.cli import main

if __name__ == "__main__":
    sys.exit(main())
