"""``python -m spermseg`` is the same as the ``spermseg`` command."""

import sys

from spermseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
