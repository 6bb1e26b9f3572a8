"""``python -m clearft`` runs the command line."""

import sys

from clearft.cli import main

sys.exit(main())
