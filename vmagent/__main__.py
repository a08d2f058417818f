"""``python -m vmagent``: the same as the ``vmagent`` command."""

import sys

from .cli import main

sys.exit(main())
