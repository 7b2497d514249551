"""``python -m fnet`` runs the ``fnet`` command."""

import sys

from fnet.cli import main

sys.exit(main())
