"""Allows ``python -m clear_core``."""

import sys

from .cli import main

sys.exit(main())
