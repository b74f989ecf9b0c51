"""``python -m cli``: the ``spyglass`` command."""

import sys

from cli.parser import main

sys.exit(main())
