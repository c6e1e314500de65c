"""``python -m adaptive.cli``: the ``flowblend`` command."""

import sys

from adaptive.cli import main

sys.exit(main())
