"""``python -m sie``: the ``sie`` command, for an environment whose scripts are not on the PATH."""

import sys

from sie.cli import main

if __name__ == "__main__":
    sys.exit(main())
