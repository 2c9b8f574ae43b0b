"""``python -m autellix`` entry point; same as the ``autellix`` console script."""

import sys

from autellix.cli import main

if __name__ == "__main__":
    sys.exit(main())
