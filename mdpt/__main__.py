"""`python -m mdpt ...`: the `mdpt` command."""

import sys

from mdpt.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
